"""Index build time: single process vs Dask workers, on a synthetic catalog; checks both give the same index.

Renders `--tracks` tracks of `--seconds` s with the project's synthetic music generator (cached in
`--audio`, FLAC), then builds the fingerprint index twice with the same params: `build_index` in
this process (its decode workers and torch threads as configured), and `build_index_distributed`
on a Dask cluster (`--cluster local:N` starts N single-threaded worker processes here; or a scheduler
address). Reports per phase (cluster start, worker warm-up: imports + model load, embed, merge into
FAISS) wall seconds, tracks/s and
× real time, and checks that the two indexes hold the same vectors, id map and refs.

    .venv/bin/python benchmarks/index_distributed.py --model models/fingerprint --tracks 60 --seconds 30
    .venv/bin/python benchmarks/index_distributed.py --model models/fingerprint --cluster tcp://HOST:8786 --audio /shared/bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def render_catalog(folder: Path, tracks: int, seconds: float) -> list[tuple[str, Path]]:
    """`tracks` synthetic tracks as FLAC under `folder` (kept between runs: rendering is slow)."""
    import soundfile as sf

    from musicid.config import SynthConfig
    from musicid.data.synth import render_track_preview
    from musicid.index import index_refs_from_folder

    folder.mkdir(parents=True, exist_ok=True)
    cfg = SynthConfig(seed=7, min_duration_s=seconds, max_duration_s=seconds)
    for work in range(tracks):
        path = folder / f"track-{work:05d}.flac"
        if not path.exists():
            audio, rate = render_track_preview(work, 0, cfg)
            sf.write(path.with_suffix(".tmp.flac"), audio, rate)
            path.with_suffix(".tmp.flac").rename(path)
    return [ref for ref in index_refs_from_folder(folder) if ref[0] < f"track-{tracks:05d}"]


def timed(label: str, phases: dict[str, float], run):
    started = time.perf_counter()
    result = run()
    phases[label] = time.perf_counter() - started
    return result


def report(title: str, phases: dict[str, float], n_tracks: int, audio_s: float) -> None:
    total = sum(phases.values())
    split = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())
    print(f"{title:<22} {total:7.1f} s  {n_tracks / total:6.2f} tracks/s  {audio_s / total:6.0f}× real time  ({split})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a fingerprint model folder")
    parser.add_argument("--tracks", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--cluster", default="local:2", help="local:N or a Dask scheduler address")
    parser.add_argument("--audio", type=Path, default=Path(tempfile.gettempdir()) / "musicid-bench-index-distributed")
    parser.add_argument("--kind", default="flat", choices=["flat", "ivf_flat", "ivf_pq"])
    args = parser.parse_args()

    import faiss
    import torch

    from musicid.config import IndexConfig
    from musicid.families.fingerprint.io import load_model
    from musicid.index import partial_dir
    from musicid.index.build import check_buildable, embed_refs, merge_parts
    from musicid.index.distributed import dask_client, embed_chunk, embed_refs_distributed

    started = time.perf_counter()
    refs = render_catalog(args.audio, args.tracks, args.seconds)
    print(f"catalog: {len(refs)} tracks × {args.seconds:g} s in {args.audio} ({time.perf_counter() - started:.0f} s to render/check)")
    cfg = IndexConfig(kind=args.kind, device="cpu")
    loaded = load_model(args.model, cfg.device)
    audio_s = len(refs) * args.seconds
    print(f"machine: {os.cpu_count()} CPUs; single process: torch {torch.get_num_threads()} threads + "
          f"{cfg.decode_workers} decode workers; Dask {args.cluster}: 1 thread per worker")
    work = Path(tempfile.mkdtemp(prefix="musicid-bench-"))
    try:
        single, dask = work / "single", work / "dask"
        phases: dict[str, float] = {}
        check_buildable(refs, loaded, cfg)
        parts, skipped = timed("embed", phases, lambda: embed_refs(refs, loaded, partial_dir(single), cfg, progress=False))
        timed("merge", phases, lambda: merge_parts(refs, loaded, partial_dir(single), parts, skipped, single, cfg, progress=False))
        report("single process", phases, len(refs), audio_s)

        phases = {}
        client_cm = dask_client(args.cluster)
        client = timed("cluster start", phases, client_cm.__enter__)
        try:
            workers = len(client.scheduler_info()["workers"])
            # an empty chunk: each worker imports torch + musicid and loads the model (cached for the build)
            timed("worker warm-up", phases, lambda: client.run(
                embed_chunk, [], str(Path(args.model).absolute()), load_model, loaded.signature, "", cfg))
            parts, skipped = timed("embed", phases, lambda: embed_refs_distributed(
                refs, loaded, args.model, load_model, partial_dir(dask), cfg, client, progress=False))
        finally:
            client_cm.__exit__(None, None, None)
        timed("merge", phases, lambda: merge_parts(refs, loaded, partial_dir(dask), parts, skipped, dask, cfg, progress=False))
        report(f"dask ({workers} workers)", phases, len(refs), audio_s)
        without_start = {name: seconds for name, seconds in phases.items() if name in ("embed", "merge")}
        report("dask, cluster warm", without_start, len(refs), audio_s)

        a, b = faiss.read_index(str(single / "index.faiss")), faiss.read_index(str(dask / "index.faiss"))
        ids_a, ids_b = np.load(single / "ids.npz"), np.load(dask / "ids.npz")
        diff = float(np.abs(a.reconstruct_n(0, a.ntotal) - b.reconstruct_n(0, b.ntotal)).max()) if a.ntotal == b.ntotal else float("inf")
        same = (a.ntotal == b.ntotal and diff < 1e-5
                and all(np.array_equal(ids_a[key], ids_b[key]) for key in ("track_index", "offset_s"))
                and json.loads((single / "refs.json").read_text()) == json.loads((dask / "refs.json").read_text()))
        print(f"same index: {same} ({a.ntotal} vectors, max |Δ| {diff:.2e})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
