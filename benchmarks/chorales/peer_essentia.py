"""Peer for the works benchmark: essentia's Qmax cover-song distance, all-vs-all over a track list.

Runs inside the essentia venv (.bench/essentia-venv, made by benchmarks/works_chorales.py). Per track:
HPCP chroma with essentia's own pipeline (`essentia.pytools.spectral.hpcpgram`: FrameGenerator →
Windowing blackmanharris62 → Spectrum → SpectralPeaks → HPCP, 12 bins, 100–4000 Hz), at the WAV's
sample rate (16 kHz: frame 2048 / hop 1024 = 128 ms / 64 ms, the time-frequency resolution of essentia's
cover-song tutorial at 32 kHz with 4096 / 2048), optionally averaged over `--hpcp-average`
non-overlapping frames. Per ordered pair (query, reference):
`ChromaCrossSimilarity(frameStackSize=9, frameStackStride=1, binarizePercentile=0.095, oti=True)` then
`CoverSongSimilarity(disOnset=0.5, disExtension=0.5, alignmentType='serra09', distanceType='asymmetric')`
→ a distance (lower = more similar). The diagonal (a track against itself) is not computed.

    python peer_essentia.py --folder .bench/chorales --tracks tracks.json --out-dir .bench/chorales/peer [-j 1]

tracks.json: [{"track_id", "file", "work_id"}, ...] (file relative to --folder). Writes to --out-dir:
distances.npy (N × N, rows = queries, columns = references, in tracks.json order), peer.json (timings,
parameters, essentia version); hpcp/ caches the chroma; a partial matrix is checkpointed so an
interrupted run resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

CROSS = dict(frameStackSize=9, frameStackStride=1, binarizePercentile=0.095, oti=True)
QMAX = dict(disOnset=0.5, disExtension=0.5, alignmentType="serra09", distanceType="asymmetric")

_FEATS: list[np.ndarray] = []


def hpcp_features(path: Path, average: int) -> np.ndarray:
    import essentia.standard as es
    from essentia.pytools.spectral import hpcpgram

    loader = es.AudioLoader(filename=str(path))
    audio, rate, channels = loader()[:3]
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    scale = rate / 32000.0  # keep the tutorial's 128 ms frames / 64 ms hop at any rate
    frame = int(2 ** round(np.log2(4096 * scale)))
    hpcp = hpcpgram(mono.astype(np.float32), sampleRate=rate, frameSize=frame, hopSize=frame // 2)
    if average > 1:
        n = len(hpcp) // average * average
        hpcp = hpcp[:n].reshape(-1, average, hpcp.shape[1]).mean(axis=1)
        peak = hpcp.max(axis=1, keepdims=True)
        hpcp = np.where(peak > 0, hpcp / np.maximum(peak, 1e-12), hpcp)
    return np.ascontiguousarray(hpcp, dtype=np.float32)


def pair_distance(query: np.ndarray, reference: np.ndarray) -> float:
    import essentia.standard as es

    cross = es.ChromaCrossSimilarity(**CROSS)(query, reference)
    _, distance = es.CoverSongSimilarity(**QMAX)(cross)
    return float(distance)


def _init(feats: list[np.ndarray]) -> None:
    global _FEATS
    _FEATS = feats


def _row(q: int) -> tuple[int, np.ndarray, float]:
    import essentia.standard as es

    cross_alg, qmax_alg = es.ChromaCrossSimilarity(**CROSS), es.CoverSongSimilarity(**QMAX)
    t0 = time.perf_counter()
    row = np.zeros(len(_FEATS), dtype=np.float64)
    for r, ref in enumerate(_FEATS):
        if r == q:
            continue
        _, row[r] = qmax_alg(cross_alg(_FEATS[q], ref))
    return q, row, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, required=True)
    ap.add_argument("--tracks", type=Path, required=True)
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("-j", "--jobs", type=int, default=1)
    ap.add_argument("--hpcp-average", type=int, default=1, help="average this many HPCP frames (1 = none)")
    ap.add_argument("--time-pairs", type=int, default=0,
                    help="only time this many query–reference pairs (and check distance direction), then exit")
    args = ap.parse_args(argv)

    import essentia

    tracks = json.loads(args.tracks.read_text())
    out: Path = args.out_dir
    (out / "hpcp").mkdir(parents=True, exist_ok=True)
    ids = [t["track_id"] for t in tracks]
    works = [t["work_id"] for t in tracks]
    print(f"essentia {essentia.__version__}: {len(tracks)} tracks, {len(set(works))} works, "
          f"hpcp average {args.hpcp_average}", flush=True)

    t0 = time.perf_counter()
    feats = []
    times_path = out / "hpcp" / f"seconds.avg{args.hpcp_average}.json"  # extraction time survives the cache
    times = json.loads(times_path.read_text()) if times_path.is_file() else {}
    for i, t in enumerate(tracks, 1):
        cache = out / "hpcp" / f"{t['track_id']}.avg{args.hpcp_average}.npy"
        if cache.is_file() and t["track_id"] in times:
            feats.append(np.load(cache))
        else:
            t1 = time.perf_counter()
            f = hpcp_features(args.folder / t["file"], args.hpcp_average)
            times[t["track_id"]] = time.perf_counter() - t1
            np.save(cache, f)
            feats.append(f)
        if i % 100 == 0 or i == len(tracks):
            print(f"  hpcp {i}/{len(tracks)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    times_path.write_text(json.dumps(times))
    feature_s = float(sum(times[t["track_id"]] for t in tracks))
    frames = np.array([len(f) for f in feats])
    print(f"hpcp: {feature_s:.1f} s; frames per track median {int(np.median(frames))}, max {frames.max()}", flush=True)

    if args.time_pairs:
        # direction check: a same-work pair vs different-work pairs from the first query that has one
        q = next((i for i in range(len(tracks)) if works.count(works[i]) > 1), 0)
        same = [r for r in range(len(tracks)) if r != q and works[r] == works[q]]
        diff = [r for r in range(len(tracks)) if works[r] != works[q]]
        rng = np.random.default_rng(0)  # timing: random pairs over the whole set (cost grows with n·m)
        others = [tuple(int(x) for x in rng.choice(len(tracks), 2, replace=False)) for _ in range(args.time_pairs)]
        pairs = ([(q, same[0])] if same else []) + [(q, r) for r in diff[:3]] + others
        pair_s, dists = [], []
        for a, b in pairs:
            t1 = time.perf_counter()
            dists.append(pair_distance(feats[a], feats[b]))
            pair_s.append(time.perf_counter() - t1)
        k = 1 if same else 0
        result = {
            "essentia": essentia.__version__, "pairs": len(pairs),
            "seconds_per_pair": float(np.mean(pair_s[k + 3:] or pair_s)),
            "query": ids[q], "same_work_ref": ids[same[0]] if same else None,
            "same_work_distance": dists[0] if same else None,
            "different_work_distances": dists[k:k + 3],
            "frames_median": int(np.median(frames)),
        }
        print(json.dumps(result), flush=True)
        (out / "timing.json").write_text(json.dumps(result, indent=1) + "\n")
        return 0

    n = len(tracks)
    key = hashlib.sha1(json.dumps([ids, args.hpcp_average]).encode()).hexdigest()[:12]
    partial, done_path = out / f"partial-{key}.npy", out / f"partial-{key}.done.npy"
    dist = np.load(partial) if partial.is_file() else np.zeros((n, n))
    done = np.load(done_path) if done_path.is_file() else np.zeros(n, dtype=bool)
    query_s = np.zeros(n)
    todo = [q for q in range(n) if not done[q]]
    if len(todo) < n:
        print(f"resuming: {n - len(todo)} of {n} query rows already computed", flush=True)
    print(f"pairwise: {n} queries × {n - 1} references = {n * (n - 1)} pairs, {args.jobs} job(s)", flush=True)
    t0 = time.perf_counter()
    last_save = t0

    def take(result: tuple[int, np.ndarray, float], k: int) -> None:
        nonlocal last_save
        q, row, secs = result
        dist[q], done[q], query_s[q] = row, True, secs
        now = time.perf_counter()
        if k % 10 == 0 or k == len(todo):
            rate = (now - t0) / k
            print(f"  queries {k}/{len(todo)} ({now - t0:.0f} s, {rate:.2f} s/query wall, "
                  f"~{rate * (len(todo) - k) / 60:.1f} min left)", flush=True)
        if now - last_save > 60 or k == len(todo):
            np.save(partial, dist)
            np.save(done_path, done)
            last_save = now

    if args.jobs > 1:
        with Pool(args.jobs, initializer=_init, initargs=(feats,)) as pool:
            for k, result in enumerate(pool.imap_unordered(_row, todo), 1):
                take(result, k)
    else:
        _init(feats)
        for k, q in enumerate(todo, 1):
            take(_row(q), k)
    wall = time.perf_counter() - t0
    np.save(out / "distances.npy", dist)
    timed = query_s[query_s > 0]
    report = {
        "system": "essentia Qmax (ChromaCrossSimilarity oti + CoverSongSimilarity serra09 asymmetric)",
        "essentia": essentia.__version__, "tracks": n, "works": len(set(works)), "pairs": n * (n - 1),
        "jobs": args.jobs, "hpcp_average": args.hpcp_average, "frames_median": int(np.median(frames)),
        "cross_similarity": CROSS, "cover_song_similarity": QMAX,
        "feature_seconds": feature_s, "feature_seconds_per_track": feature_s / max(1, n),
        "pairwise_wall_seconds": wall,
        # one query against all references, on one core (measured in the worker), + its own chroma
        "seconds_per_query": float(timed.mean()) + feature_s / max(1, n) if len(timed) else None,
        "seconds_per_query_pairwise_only": float(timed.mean()) if len(timed) else None,
        "seconds_per_pair": float(timed.mean()) / max(1, n - 1) if len(timed) else None,
        "resumed_rows": n - len(todo),
        "track_ids": ids, "work_ids": works,
    }
    (out / "peer.json").write_text(json.dumps(report, indent=1) + "\n")
    for p in (partial, done_path):
        if p.is_file():
            os.remove(p)
    print(f"pairwise: {wall:.1f} s wall; {report['seconds_per_query_pairwise_only']:.3f} s per query "
          f"(1 core), {report['seconds_per_pair'] * 1e3:.2f} ms per pair", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
