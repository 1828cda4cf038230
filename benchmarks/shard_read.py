"""Read throughput of the Zarr shard store against plain .npy (memory-mapped) and .npz.

Builds a synthetic store (tonal audio-like windows: a few partials with vibrato, an envelope and
a little noise, so compression ratios are not those of white noise) in a temporary directory,
writes the same stored-dtype waveform as `waveform.npy` and `waveform.npz`, then times, in one run:

  sequential   batches of --batch contiguous rows
  random 1     single random rows (what a naive map-style Dataset does per item)
  random B     batches of --batch random rows (zarr: sorted rows, one orthogonal selection)

Every read returns float32 rows (int16 scaled back), as training sees them. Figures are with a
warm page cache (the files were just written); cold-cache reads from disk are slower, most of all
for random reads of the npy memmap. npz cannot be memory-mapped: `np.load(f)["waveform"]` reads
and (for savez_compressed) inflates the whole member on every access, so npz is reported twice:
"reopen" (open + read member per access: the realistic cost when nothing is cached) and "loaded
once" (one open, then in-memory slicing; its one-off load time is printed).

    PYTHONPATH=src python benchmarks/shard_read.py                      # 8000 x 16000 float16, zstd
    PYTHONPATH=src python benchmarks/shard_read.py --rows 20000 --compressor blosc
    PYTHONPATH=src python benchmarks/shard_read.py --store data/shards/train.zarr
    PYTHONPATH=src python benchmarks/shard_read.py --family pitch     # pitch stores vs npy+npz and HDF5
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from musicid.config import ShardsConfig
from musicid.store import ShardWriter, WindowDataset, open_store, store_summary
from musicid.store.writer import decode_windows, encode_windows

MB = 1e6


def synth_windows(rng: np.random.Generator, n: int, window: int, sample_rate: int) -> np.ndarray:
    t = np.arange(window, dtype=np.float32) / np.float32(sample_rate)
    f0 = rng.uniform(80, 800, size=(n, 1)).astype(np.float32)
    vib = np.float32(0.01) * np.sin(np.float32(2 * np.pi) * rng.uniform(3, 7, (n, 1)).astype(np.float32) * t)
    base = np.float32(2 * np.pi) * f0 * t * (1 + vib)  # instantaneous phase of the fundamental
    out = rng.standard_normal((n, window), dtype=np.float32)
    out *= np.float32(0.003)
    for k, amp in enumerate((0.5, 0.25, 0.12), start=1):
        phase = rng.uniform(0, 2 * np.pi, size=(n, 1)).astype(np.float32)
        partial = base * np.float32(k)
        partial += phase
        np.sin(partial, out=partial)
        partial *= np.float32(amp)
        out += partial
    out *= np.exp(-t * rng.uniform(0.2, 2.0, size=(n, 1)).astype(np.float32))
    return np.clip(out, -1, 1, out=out)


def build_synthetic(args: argparse.Namespace, workdir: Path) -> tuple[Path, np.ndarray]:
    """Write the zarr store and return it with the stored-dtype waveform (memmapped .npy)."""
    rate = 8000
    cfg = ShardsConfig(
        sample_rate=rate,
        window_s=args.window_samples / rate,
        hop_s=args.window_samples / rate,
        dtype=args.dtype,
        compressor=args.compressor,
        level=args.level,
        chunk_mb=args.chunk_mb,
        shard_mb=args.shard_mb,
    )
    assert cfg.window_samples == args.window_samples
    rng = np.random.default_rng(0)
    n_tracks = max(1, args.rows // 30)
    path = workdir / "bench.zarr"
    stored = np.lib.format.open_memmap(
        workdir / "waveform.npy", mode="w+", dtype=args.dtype, shape=(args.rows, args.window_samples)
    )
    t0 = time.perf_counter()
    gen_s = 0.0
    with ShardWriter(path, cfg=cfg, track_ids=[f"t{i}" for i in range(n_tracks)], work_ids=["w0"]) as w:
        for start in range(0, args.rows, 1024):
            n = min(1024, args.rows - start)
            g0 = time.perf_counter()
            windows = synth_windows(rng, n, args.window_samples, rate)
            stored[start : start + n] = encode_windows(windows, args.dtype)
            gen_s += time.perf_counter() - g0
            w.add(
                windows,
                {
                    "track_index": (np.arange(start, start + n) // 30) % n_tracks,
                    "work_index": np.zeros(n, np.int32),
                    "start_s": (np.arange(start, start + n) % 30) * cfg.window_s,
                },
            )
    total = time.perf_counter() - t0
    print(f"built synthetic store in {total:.1f} s ({gen_s:.1f} s generating audio, "
          f"{total - gen_s:.1f} s in ShardWriter)")
    stored.flush()
    return path, stored


def export_store(path: Path, rows: int | None, workdir: Path) -> np.ndarray:
    """Copy (the first `rows` rows of) an existing store's waveform into a stored-dtype .npy."""
    wave = open_store(path)["waveform"]
    n = wave.shape[0] if rows is None else min(rows, wave.shape[0])
    stored = np.lib.format.open_memmap(workdir / "waveform.npy", mode="w+", dtype=wave.dtype, shape=(n, wave.shape[1]))
    step = max(1, wave.shards[0] if wave.shards else wave.chunks[0])
    for s in range(0, n, step):
        stored[s : s + step] = wave[s : min(n, s + step)]
    stored.flush()
    return stored


def timed(fn: Callable[[int], int], budget_s: float, max_calls: int) -> tuple[float, float]:
    """Call fn(k) for k = 0, 1, ... until budget_s or max_calls; return (rows/s, seconds/call)."""
    fn(0)  # warm-up: opens handles, touches code paths
    rows, calls, t0 = 0, 0, time.perf_counter()
    while calls < max_calls:
        rows += fn(calls + 1)
        calls += 1
        if time.perf_counter() - t0 >= budget_s:
            break
    elapsed = time.perf_counter() - t0
    return rows / elapsed, elapsed / calls


def dir_stats(path: Path) -> tuple[int, int]:
    if path.is_file():
        return 1, path.stat().st_size
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=None, help="rows to synthesise (default 8000); with --store, rows copied to the baselines (default all)")
    ap.add_argument("--window-samples", type=int, default=16000, help="samples per window (16000 = 2 s at 8 kHz)")
    defaults = ShardsConfig()  # the pipeline's defaults (params.yaml may override them)
    ap.add_argument("--dtype", choices=["float16", "float32", "int16"], default=defaults.dtype)
    ap.add_argument("--compressor", choices=["none", "zstd", "blosc"], default=defaults.compressor)
    ap.add_argument("--level", type=int, default=defaults.level)
    ap.add_argument("--chunk-mb", type=float, default=defaults.chunk_mb, help="0.0305 = one 16000-sample float16 row per chunk")
    ap.add_argument("--shard-mb", type=float, default=defaults.shard_mb)
    ap.add_argument("--batch", type=int, default=256, help="rows per batched read")
    ap.add_argument("--seconds", type=float, default=2.0, help="time budget per measurement")
    ap.add_argument("--npz-compressed", action="store_true", help="write the npz with savez_compressed")
    ap.add_argument("--store", type=Path, help="benchmark this existing store instead of a synthetic one")
    ap.add_argument("--workdir", type=Path, help="where to write files (default: a temp dir, removed after)")
    ap.add_argument("--family", choices=["fingerprint", "pitch"], default="fingerprint",
                    help="pitch: the pitch family's generated stores vs the seed's npy+npz layout and HDF5 (benchmarks/pitch_read.py)")
    ap.add_argument("--sanity-per-bin", type=int, default=10, help="pitch: single notes per bin in the sanity set")
    ap.add_argument("--polyphonic-gb", type=float, default=1.0, help="pitch: GB of polyphonic waveform")
    ap.add_argument("--workers", type=int, default=2, help="pitch: generation workers")
    ap.add_argument("--out", type=Path, help="pitch: write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.family == "pitch":
        sys.path.insert(0, str(Path(__file__).parent))
        import pitch_read

        return pitch_read.run(args)

    workdir = Path(tempfile.mkdtemp(prefix="shard_read-", dir=args.workdir))
    try:
        if args.store:
            store = args.store
            stored = export_store(store, args.rows, workdir)
        else:
            args.rows = args.rows or 8000
            store, stored = build_synthetic(args, workdir)
        summary = store_summary(store)
        rows, window = stored.shape
        dtype = str(stored.dtype)
        print(
            f"store {summary['path']}: {summary['rows']} rows x {summary['window_samples']} samples "
            f"{summary['dtype']}, compressor {summary['compressor']}, {summary['rows_per_chunk']} rows/chunk, "
            f"{summary['rows_per_shard']} rows/shard; raw {summary['raw_bytes'] / MB:.0f} MB"
        )
        if rows < summary["rows"]:
            print(f"baselines and reads use the first {rows} rows")

        npy_path = workdir / "waveform.npy"
        npz_path = workdir / "waveform.npz"
        t0 = time.perf_counter()
        (np.savez_compressed if args.npz_compressed else np.savez)(npz_path, waveform=stored)
        print(f"wrote npz ({'savez_compressed' if args.npz_compressed else 'savez'}) in {time.perf_counter() - t0:.1f} s")
        del stored

        rng = np.random.default_rng(1)
        B = min(args.batch, rows)
        max_calls = 100_000

        def seq_starts(k: int) -> int:
            return (k * B) % max(1, rows - B + 1)

        def rand_rows(k: int) -> np.ndarray:
            return rng.integers(0, rows, B)

        results: list[tuple[str, str, float, float]] = []

        def measure(fmt: str, kind: str, fn: Callable[[int], int], budget: float | None = None, calls: int = max_calls):
            per_s, per_call = timed(fn, args.seconds if budget is None else budget, calls)
            results.append((fmt, kind, per_s, per_call))
            print(f"  {fmt:<22} {kind:<12} {per_s:>11,.0f} rows/s")

        # ---- zarr, lazy: direct shard path (default) and zarr-python's own API (fast=False)
        for label, fast in (("zarr direct", True), ("zarr via zarr API", False)):
            ds = WindowDataset(store, fast=fast)
            measure(label, "sequential", lambda k: len(ds.read_batch(slice(seq_starts(k), seq_starts(k) + B))["waveform"]))
            measure(label, "random 1", lambda k: ds[int(rng.integers(0, rows))]["waveform"].ndim)
            measure(label, "random B", lambda k: len(ds.read_batch(rand_rows(k))["waveform"]))
            del ds

        # ---- npy memmap
        mm = np.load(npy_path, mmap_mode="r")
        measure("npy mmap", "sequential", lambda k: len(decode_windows(np.asarray(mm[seq_starts(k) : seq_starts(k) + B]), dtype)))
        measure("npy mmap", "random 1", lambda k: len(decode_windows(np.asarray(mm[int(rng.integers(0, rows))])[None], dtype)))
        measure("npy mmap", "random B", lambda k: len(decode_windows(mm[np.sort(rand_rows(k))], dtype)))
        del mm

        # ---- npz: reopen per access (the honest cost without a cache), and loaded once
        def npz_reopen(k: int) -> int:
            with np.load(npz_path) as z:
                return len(decode_windows(z["waveform"][int(rng.integers(0, rows))][None], dtype))

        measure("npz reopen/access", "random 1", npz_reopen, budget=args.seconds, calls=20)
        t0 = time.perf_counter()
        with np.load(npz_path) as z:
            loaded = z["waveform"]
        npz_load_s = time.perf_counter() - t0
        measure("npz loaded once", "sequential", lambda k: len(decode_windows(loaded[seq_starts(k) : seq_starts(k) + B], dtype)))
        measure("npz loaded once", "random 1", lambda k: len(decode_windows(loaded[int(rng.integers(0, rows))][None], dtype)))
        measure("npz loaded once", "random B", lambda k: len(decode_windows(loaded[np.sort(rand_rows(k))], dtype)))
        del loaded

        # ---- zarr preloaded into memory (WindowDataset(preload=True)) for the same comparison
        t0 = time.perf_counter()
        pre = WindowDataset(store, preload=True)
        zarr_load_s = time.perf_counter() - t0
        measure("zarr preload", "random B", lambda k: len(pre.read_batch(rand_rows(k))["waveform"]))
        del pre

        # ---- table
        kinds = ["sequential", "random 1", "random B"]
        fmts = list(dict.fromkeys(r[0] for r in results))
        table = {(f, k): (s, c) for f, k, s, c in results}
        row_mb = window * np.dtype(np.float32).itemsize / MB
        print()
        npz_kind = "savez_compressed" if args.npz_compressed else "savez, uncompressed"
        print(f"rows/s (float32 out; B = {B}; warm page cache; {rows} rows x {window} {dtype}; npz: {npz_kind})")
        print(f"{'format':<22}" + "".join(f"{k:>14}" for k in kinds) + f"{'best MB/s f32':>15}")
        for f in fmts:
            cells = [table.get((f, k)) for k in kinds]
            best = max((c[0] for c in cells if c), default=0.0)
            print(f"{f:<22}" + "".join(f"{c[0]:>14,.0f}" if c else f"{'-':>14}" for c in cells) + f"{best * row_mb:>15,.0f}")
        print()
        print(f"one-off load into RAM: npz {npz_load_s:.2f} s, zarr preload (decode to float32) {zarr_load_s:.2f} s")
        print()
        print(f"{'on disk':<22}{'files':>10}{'MB':>12}{'ratio':>10}")
        raw = rows * window * np.dtype(dtype).itemsize
        for name, p in (("zarr " + summary["compressor"], Path(store)), ("npy", npy_path), ("npz", npz_path)):
            files, size = dir_stats(p)
            print(f"{name:<22}{files:>10}{size / MB:>12,.1f}{(raw / size if size else 0):>10.2f}")
        print(f"(zarr waveform: {summary['chunks']} chunks in {-(-summary['rows'] // summary['rows_per_shard'])} shard files)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
