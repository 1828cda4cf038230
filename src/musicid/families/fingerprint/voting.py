"""Offset-consistent voting: segment hits that agree on where the query sits in a reference win.

Each neighbour hit of query segment j (starting at q_j) on reference segment at r gives a candidate
alignment a = r − q_j: the query's start within that reference. Alignments are binned every
`bin_s`; every hit votes into two overlapping windows (its bin with the previous one and with the
next one), so a cluster of hits straddling a bin edge is never split. Within a (track, window),
each query segment counts once with its best similarity; the track's score is its best window's
sum divided by the number of query segments (1.0 = every segment matched perfectly and
consistently), comparable across query lengths. The offset is the median alignment of the
counted hits in that window.
"""

from __future__ import annotations

import numpy as np


def vote(
    scores: np.ndarray,
    tracks: np.ndarray,
    ref_offsets: np.ndarray,
    query_starts: np.ndarray,
    bin_s: float,
    top: int,
) -> list[tuple[int, float, float]]:
    """(track, score, offset_s) for the `top` best tracks, best first.

    `scores`, `tracks`, `ref_offsets`: (n_segments, k) as returned by RefIndex.search (masked
    slots have track −1); `query_starts`: (n_segments,) seconds.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_segments, k = scores.shape
    if n_segments == 0 or k == 0:
        return []
    segment = np.repeat(np.arange(n_segments, dtype=np.int64), k)
    score = scores.ravel()
    track = np.asarray(tracks, dtype=np.int64).ravel()
    align = np.asarray(ref_offsets, dtype=np.float64).ravel() - np.repeat(np.asarray(query_starts, dtype=np.float64), k)
    keep = (track >= 0) & np.isfinite(score) & np.isfinite(align) & (score > 0)  # dissimilar hits don't vote
    if not keep.any():
        return []
    segment, score, track, align = segment[keep], score[keep], track[keep], align[keep]

    # Every hit votes into window `b` (bins b, b+1) and window `b − 1` (bins b − 1, b).
    bins = np.floor(align / bin_s).astype(np.int64)
    window = np.concatenate([bins, bins - 1])
    segment, score, track, align = (np.concatenate([x, x]) for x in (segment, score, track, align))
    window -= window.min()
    n_windows = int(window.max()) + 1

    # One vote per (track, window, segment): its best hit. Keys fit int64 for any realistic catalog.
    group = (track * n_windows + window) * n_segments + segment
    order = np.lexsort((-score, group))
    group, score, align = group[order], score[order], align[order]
    first = np.ones(len(group), dtype=bool)
    first[1:] = group[1:] != group[:-1]
    group, score, align = group[first], score[first], align[first]

    # Sum per (track, window), then each track's best window.
    track_window = group // n_segments
    keys, inverse = np.unique(track_window, return_inverse=True)
    sums = np.bincount(inverse, weights=score)
    key_track = keys // n_windows
    by_track = np.lexsort((-sums, key_track))  # per track, best window first
    best = by_track[np.r_[True, key_track[by_track][1:] != key_track[by_track][:-1]]]
    ranked = best[np.lexsort((key_track[best], -sums[best]))][:top]  # score desc, then track id

    results = []
    for key_position in ranked:  # at most `top` iterations
        hits = align[inverse == key_position]
        offset = max(0.0, float(np.median(hits)))
        results.append((int(key_track[key_position]), float(sums[key_position] / n_segments), offset))
    return results
