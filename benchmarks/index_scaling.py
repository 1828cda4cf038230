"""Index scaling: query latency and memory vs catalog size, plus indexing throughput with a model.

Part 1 (synthetic embeddings, no model): catalogs of 1k / 10k / 100k tracks with
`--track-seconds` of audio each (one vector per index hop). Each query is a 10 s clip: its segment
embeddings are the stored vectors of a random track at a random offset plus noise, searched with
`--neighbors` per segment and aggregated by the same offset voting `musicid identify` uses.
Reports build time, index bytes, bytes per hour of audio, latency p50/p95 and top-1.

Part 2 (`--model DIR`): embeds synthetic music with a trained fingerprinter and reports indexing
throughput in × real time on this machine.

Part 3 (`--real INDEX --queries-dir DIR --truth FILE --model DIR`): real-music embeddings. The
reference vectors of INDEX (e.g. the dev kit indexed with `musicid index build`) plus distractor
tracks up to each `--tracks` size; distractors are real reference tracks' vectors under a random
rotation (a new one every 256 distractors), so they keep real music's internal similarity structure without
being near any query. Real degraded queries (truth.json of ../shared/bench/make_queries.py) are
embedded with the model and answered by offset voting against each index kind. Reports top-1,
recall of the approximate kinds' segment neighbours against flat (share of flat's k neighbours
also returned), latency p50/p95 per query, index MB and MB per hour of audio.

Part 4 (`--ondisk`): a catalog too large for this machine's memory as floats (default 1M tracks × 30
vectors = 30M × 128 float32 = 15 GB) built as an IVF-PQ index with on-disk inverted lists, the way a
large catalog is built by many workers: the quantizer and PQ are trained once on a sample, then
vectors are generated block by block (tracks: a random centre per track, its segments near it, so
tracks have internal structure as real music has) and each block is added to its own copy of the
trained index and written as a shard; `faiss.contrib.ondisk.merge_ondisk` merges the shards into one
`.ivfdata` file that searching memory-maps. Reports build time per phase, peak RSS, index bytes,
latency p50/p95 per query segment (`--neighbors` nearest, `--nprobe` cells) with the lists cold on
disk and warm, and recall@k against exact search over all vectors (recomputed block by block) on a
sample of queries (stored vectors plus `--noise`).

    .venv/bin/python benchmarks/index_scaling.py                      # 1k, 10k, 100k tracks
    .venv/bin/python benchmarks/index_scaling.py --model models/fingerprint --tracks 1000
    .venv/bin/python benchmarks/index_scaling.py --ondisk --tracks 1000000   # part 4: 30M vectors, on-disk IVF-PQ
    .venv/bin/python benchmarks/index_scaling.py --real /tmp/devidx --queries /tmp/dev-music/queries \
        --truth /tmp/dev-music/truth.json --model models/fingerprint --tracks 10000 100000 --kinds flat ivf_flat ivf_pq
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import faiss
import numpy as np

from musicid.families.fingerprint.voting import vote


def make_catalog(n_tracks: int, vectors_per_track: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    data = rng.standard_normal((n_tracks * vectors_per_track, dim), dtype=np.float32)
    faiss.normalize_L2(data)
    return data


def build(kind: str, data: np.ndarray, nlist: int, pq_m: int) -> faiss.Index:
    dim = data.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf_flat":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        sample = data[np.random.default_rng(0).choice(len(data), min(len(data), nlist * 64), replace=False)]
        index.train(sample)
        index.nprobe = 16
    index.add(data)
    return index


def run_scaling(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    per_track = int(args.track_seconds / args.hop_s)
    query_segments = int((args.query_seconds - 1.0) / args.query_hop_s) + 1
    print(f"catalog: {args.track_seconds:g} s per track → {per_track} vectors/track of {args.dim} float32; "
          f"query {args.query_seconds:g} s → {query_segments} segments × {args.neighbors} neighbours; {faiss.omp_get_max_threads()} threads")
    print(f"{'tracks':>8} {'kind':>9} {'vectors':>11} {'build s':>8} {'index MB':>9} {'MB/hour':>8} "
          f"{'p50 ms':>8} {'p95 ms':>8} {'top-1':>6}")
    for n_tracks in args.tracks:
        data = make_catalog(n_tracks, per_track, args.dim, rng)
        hours = n_tracks * args.track_seconds / 3600
        kinds = [k for k in args.kinds if not (k == "flat" and len(data) * args.dim * 4 > args.max_flat_gb * 2**30)]
        for kind in kinds:
            began = time.perf_counter()
            index = build(kind, data, args.nlist, args.pq_m)
            build_s = time.perf_counter() - began
            size = faiss.serialize_index(index).nbytes
            latencies, hits = [], 0
            for _ in range(args.queries):
                track = int(rng.integers(n_tracks))
                start = int(rng.integers(0, per_track - query_segments * args.query_hop_s / args.hop_s))
                rows = track * per_track + start + (np.arange(query_segments) * args.query_hop_s / args.hop_s).astype(int)
                query = data[rows] + rng.standard_normal((query_segments, args.dim), dtype=np.float32) * args.noise
                faiss.normalize_L2(query)
                began = time.perf_counter()
                scores, ids = index.search(query, args.neighbors)
                tracks = np.where(ids >= 0, ids // per_track, -1)
                offsets = (ids % per_track) * args.hop_s
                ranked = vote(scores, tracks, offsets, np.arange(query_segments) * args.query_hop_s, 0.5, 5)
                latencies.append((time.perf_counter() - began) * 1000)
                hits += bool(ranked) and ranked[0][0] == track
            print(f"{n_tracks:>8} {kind:>9} {len(data):>11,} {build_s:>8.1f} {size / 2**20:>9.1f} {size / 2**20 / hours:>8.2f} "
                  f"{np.percentile(latencies, 50):>8.2f} {np.percentile(latencies, 95):>8.2f} {hits / args.queries:>6.2f}")
            del index
        del data


def run_throughput(args: argparse.Namespace) -> None:
    from musicid.audio import to_model_rate
    from musicid.config import SynthConfig
    from musicid.data.synth import render_track_preview
    from musicid.families.fingerprint.io import embed_signal, load_model

    loaded = load_model(args.model, args.device)
    audio, rate = render_track_preview(0, 0, SynthConfig(min_duration_s=60, max_duration_s=60))
    signal = to_model_rate(audio, rate, loaded.spec.sample_rate)
    embed_signal(loaded, signal[: loaded.spec.sample_rate * 5], args.hop_s)  # warm-up
    began = time.perf_counter()
    repeats = 3
    for _ in range(repeats):
        embeddings, _ = embed_signal(loaded, signal, args.hop_s)
    seconds = time.perf_counter() - began
    audio_s = repeats * len(signal) / loaded.spec.sample_rate
    print(f"indexing throughput ({loaded.device}, hop {args.hop_s} s, model {loaded.signature}): "
          f"{audio_s / seconds:.0f}× real time ({len(embeddings) * repeats / seconds:.0f} segments/s, embedding only; "
          f"decode + resample excluded)")


def _rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def run_real(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from musicid.audio import decode, to_model_rate
    from musicid.families.fingerprint.io import embed_signal, load_model
    from musicid.index import load_index

    rng = np.random.default_rng(0)
    real = load_index(args.real)
    loaded = load_model(args.model, args.device)
    if real.signature != loaded.signature:
        raise SystemExit(f"{args.real} was built with model {real.signature}, --model is {loaded.signature}")
    vectors = real.index.reconstruct_n(0, real.n_vectors)
    ref_of = {Path(r["ref"]).name: i for i, r in enumerate(real.refs)}
    truth = json.loads(Path(args.truth).read_text())
    main_conditions = {"noise", "noise_reverb", "codec_noise", "phone", "telephone"}
    names = sorted(n for n, t in truth.items() if t["condition"] in main_conditions and Path(t["ref"]).name in ref_of)
    names = [names[i] for i in np.sort(rng.choice(len(names), min(args.queries, len(names)), replace=False))]
    queries = []
    for name in names:
        audio = decode(Path(args.queries_dir) / name)
        emb, starts = embed_signal(loaded, to_model_rate(audio.samples, audio.sample_rate, loaded.spec.sample_rate), args.query_hop_s)
        queries.append((emb, starts, ref_of[Path(truth[name]["ref"]).name], float(truth[name]["length_s"])))
    real_hours = sum(r["duration_s"] for r in real.refs) / 3600
    per_track = [np.flatnonzero(real.track_index == t) for t in range(len(real.refs))]
    print(f"real: {len(real.refs)} tracks, {real.n_vectors:,} vectors ({real_hours:.2f} h) from {args.real}; "
          f"{len(queries)} real queries (main conditions, lengths {sorted({q[3] for q in queries})}); "
          f"distractors: rotated copies of real tracks; {faiss.omp_get_max_threads()} threads")
    print(f"{'tracks':>8} {'kind':>9} {'vectors':>11} {'build s':>8} {'index MB':>9} {'MB/hour':>8} "
          f"{'p50 ms':>8} {'p95 ms':>8} {'top-1':>6} {'recall':>7}")
    for n_tracks in args.tracks:
        extra = max(0, n_tracks - len(real.refs))
        blocks, track_index, offsets, hours = [vectors], [real.track_index.astype(np.int64)], [real.offset_s], real_hours
        for d in range(extra):
            source = int(rng.integers(len(real.refs)))
            if d % 256 == 0:
                rotation = _rotation(vectors.shape[1], rng)
            ids = per_track[source][: int(args.track_seconds / args.hop_s)]
            blocks.append(vectors[ids] @ rotation)
            track_index.append(np.full(len(ids), len(real.refs) + d, dtype=np.int64))
            offsets.append(real.offset_s[ids])
            hours += len(ids) * args.hop_s / 3600
        data = np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)
        track_of, offset_of = np.concatenate(track_index), np.concatenate(offsets)
        del blocks
        flat_ids: list[np.ndarray] = []
        for kind in args.kinds:
            if kind == "flat" and len(data) * data.shape[1] * 4 > args.max_flat_gb * 2**30:
                continue
            began = time.perf_counter()
            index = build(kind, data, args.nlist, args.pq_m)
            if kind != "flat":
                index.nprobe = args.nprobe
            build_s = time.perf_counter() - began
            size = faiss.serialize_index(index).nbytes
            latencies, hits, recalls = [], 0, []
            for q, (emb, starts, truth_track, _) in enumerate(queries):
                began = time.perf_counter()
                scores, ids = index.search(emb, args.neighbors)
                safe = np.where(ids >= 0, ids, 0)
                ranked = vote(scores, np.where(ids >= 0, track_of[safe], -1), offset_of[safe], starts, 0.5, 5)
                latencies.append((time.perf_counter() - began) * 1000)
                hits += bool(ranked) and ranked[0][0] == truth_track
                if kind == "flat":
                    flat_ids.append(ids)
                elif flat_ids:
                    recalls.append(np.mean([len(np.intersect1d(a, b)) / len(a) for a, b in zip(flat_ids[q], ids)]))
            recall = f"{np.mean(recalls):>7.3f}" if recalls else f"{'—':>7}"
            print(f"{n_tracks:>8} {kind:>9} {len(data):>11,} {build_s:>8.1f} {size / 2**20:>9.1f} {size / 2**20 / hours:>8.2f} "
                  f"{np.percentile(latencies, 50):>8.2f} {np.percentile(latencies, 95):>8.2f} {hits / len(queries):>6.3f} {recall}",
                  flush=True)
            del index
        del data


def _track_block(first_track: int, n_tracks: int, per_track: int, dim: int, seed: int) -> np.ndarray:
    """Vectors of tracks [first, first + n): each track a random centre, its segments near it (deterministic)."""
    rng = np.random.default_rng([seed, first_track])
    centres = rng.standard_normal((n_tracks, 1, dim), dtype=np.float32)
    data = (centres + 0.6 * rng.standard_normal((n_tracks, per_track, dim), dtype=np.float32)).reshape(-1, dim)
    faiss.normalize_L2(data)
    return data


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ondisk(args: argparse.Namespace) -> None:
    import os
    import shutil
    import tempfile

    from faiss.contrib.ondisk import merge_ondisk
    from tqdm import tqdm

    n_tracks = args.tracks[0]
    per_track = int(args.track_seconds / args.hop_s)
    total, dim = n_tracks * per_track, args.dim
    block_tracks = max(1, args.block_vectors // per_track)
    nlist = args.nlist if args.nlist != 1024 else max(256, int(np.sqrt(total)) // 256 * 256)  # ~sqrt(N) cells
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ondisk-index-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"part 4: {n_tracks:,} tracks x {per_track} vectors = {total:,} vectors of {dim} dims "
          f"({total * dim * 4 / 1e9:.1f} GB as float32), IVF{nlist},PQ{args.pq_m} with on-disk lists in {work}")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    sample_tracks = min(n_tracks, max(nlist * 30 // per_track, 1))  # ~30 training vectors per cell
    picks = np.random.default_rng(1).choice(n_tracks, sample_tracks, replace=False)
    sample = np.concatenate([_track_block(int(i), 1, per_track, dim, args.seed) for i in picks])
    quantizer = faiss.IndexFlatIP(dim)
    trained = faiss.IndexIVFPQ(quantizer, dim, nlist, args.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    trained.train(sample)
    faiss.write_index(trained, str(work / "trained.index"))
    timings["train"] = time.perf_counter() - t
    del sample

    t = time.perf_counter()
    shards = []
    for first in tqdm(range(0, n_tracks, block_tracks), desc="add blocks", unit="block"):
        n = min(block_tracks, n_tracks - first)
        block = _track_block(first, n, per_track, dim, args.seed)
        shard = faiss.read_index(str(work / "trained.index"))
        shard.add_with_ids(block, np.arange(first * per_track, first * per_track + len(block), dtype=np.int64))
        name = work / f"block-{first:09d}.index"
        faiss.write_index(shard, str(name))
        shards.append(str(name))
        del shard, block
    timings["add"] = time.perf_counter() - t

    t = time.perf_counter()
    index = faiss.read_index(str(work / "trained.index"))
    merge_ondisk(index, shards, str(work / "merged.ivfdata"))
    faiss.write_index(index, str(work / "populated.index"))
    for name in shards:
        os.remove(name)
    timings["merge"] = time.perf_counter() - t
    del index
    disk = sum(p.stat().st_size for p in work.iterdir() if p.name in ("merged.ivfdata", "populated.index"))
    build_rss = _peak_rss_mb()

    rng = np.random.default_rng(7)
    query_ids = rng.choice(total, args.queries, replace=False)
    queries = np.empty((len(query_ids), dim), dtype=np.float32)
    firsts = query_ids // per_track // block_tracks * block_tracks
    for first in np.unique(firsts):  # a vector is regenerated with the whole block it was added in, one block at a time
        block = _track_block(int(first), min(block_tracks, n_tracks - int(first)), per_track, dim, args.seed)
        queries[firsts == first] = block[query_ids[firsts == first] - int(first) * per_track]
        del block
    queries += args.noise * rng.standard_normal(queries.shape, dtype=np.float32)
    faiss.normalize_L2(queries)

    os.system("sync")
    with contextlib.suppress(OSError):  # drop the page cache (root only) so the first pass reads lists from disk
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    index = faiss.read_index(str(work / "populated.index"))  # its OnDiskInvertedLists memory-map merged.ivfdata
    index.nprobe = args.nprobe
    faiss.omp_set_num_threads(1)  # one query at a time, as a service answers
    passes = {}
    for label in ("cold", "warm"):
        latencies, found = [], []
        for q in queries:
            t = time.perf_counter()
            _, ids = index.search(q[None], args.neighbors)
            latencies.append((time.perf_counter() - t) * 1000)
            found.append(ids[0])
        passes[label] = (np.percentile(latencies, 50), np.percentile(latencies, 95))
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    search_rss = _peak_rss_mb()

    t = time.perf_counter()  # exact neighbours: every vector again, block by block
    exact_scores = np.full((len(queries), args.neighbors), -np.inf, dtype=np.float32)
    exact_ids = np.zeros((len(queries), args.neighbors), dtype=np.int64)
    for first in tqdm(range(0, n_tracks, block_tracks), desc="exact search", unit="block"):
        n = min(block_tracks, n_tracks - first)
        block = _track_block(first, n, per_track, dim, args.seed)
        scores = queries @ block.T
        top = np.argpartition(-scores, args.neighbors - 1, axis=1)[:, : args.neighbors]
        cand_scores = np.concatenate([exact_scores, np.take_along_axis(scores, top, 1)], axis=1)
        cand_ids = np.concatenate([exact_ids, top + first * per_track], axis=1)
        keep = np.argsort(-cand_scores, axis=1)[:, : args.neighbors]
        exact_scores, exact_ids = np.take_along_axis(cand_scores, keep, 1), np.take_along_axis(cand_ids, keep, 1)
    timings["exact"] = time.perf_counter() - t
    recall = np.mean([len(set(f) & set(e)) / args.neighbors for f, e in zip(found, exact_ids)])
    top1 = np.mean([f[0] == e[0] for f, e in zip(found, exact_ids)])
    self_hit = np.mean([q in f for q, f in zip(query_ids, found)])

    print(f"\n| vectors | build: train / add / merge | peak RSS build / search | index on disk | "
          f"latency p50 / p95 cold | warm | recall@{args.neighbors} vs exact | top-1 = exact | query's own vector found |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {total:,} | {timings['train']:.0f} / {timings['add']:.0f} / {timings['merge']:.0f} s | "
          f"{build_rss:,.0f} / {search_rss:,.0f} MB | {disk / 1e9:.2f} GB | "
          f"{passes['cold'][0]:.1f} / {passes['cold'][1]:.1f} ms | {passes['warm'][0]:.1f} / {passes['warm'][1]:.1f} ms | "
          f"{recall:.3f} | {top1:.3f} | {self_hit:.3f} |")
    print(f"({args.queries} queries, nprobe {args.nprobe}, noise {args.noise}; exact search took {timings['exact']:.0f} s)")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivf_pq"], choices=["flat", "ivf_flat", "ivf_pq"])
    parser.add_argument("--track-seconds", type=float, default=30.0)
    parser.add_argument("--hop-s", type=float, default=0.5)
    parser.add_argument("--query-seconds", type=float, default=10.0)
    parser.add_argument("--query-hop-s", type=float, default=0.25)
    parser.add_argument("--neighbors", type=int, default=20)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--pq-m", type=int, default=16)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--noise", type=float, default=0.05, help="query embedding noise (std per dimension)")
    parser.add_argument("--max-flat-gb", type=float, default=4.0, help="skip flat indexes larger than this")
    parser.add_argument("--model", help="a model folder: also measure embedding throughput")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--nprobe", type=int, default=16, help="IVF cells searched per query segment")
    parser.add_argument("--real", help="an index folder of real-music references: part 3")
    parser.add_argument("--queries-dir", "--queries-folder", dest="queries_dir", help="folder of real query clips (part 3)")
    parser.add_argument("--truth", help="truth.json of those queries (part 3)")
    parser.add_argument("--ondisk", action="store_true", help="part 4: one on-disk IVF-PQ index of --tracks[0] tracks")
    parser.add_argument("--block-vectors", type=int, default=1_000_000, help="part 4: vectors generated and added per block")
    parser.add_argument("--seed", type=int, default=0, help="part 4: catalog seed")
    parser.add_argument("--workdir", help="part 4: keep the index here (default: a temporary folder, removed)")
    args = parser.parse_args()
    if args.ondisk:
        run_ondisk(args)
        return
    if args.real:
        if not (args.model and args.queries_dir and args.truth):
            parser.error("--real needs --model, --queries-dir and --truth")
        run_real(args)
        return
    if args.model:
        run_throughput(args)
    run_scaling(args)


if __name__ == "__main__":
    main()
