"""Cover-song ranking metrics: mAP, MR1, top-k over a query × reference distance matrix.

The same function scores musicid's embeddings and any peer's similarity matrix, so figures set side
by side are computed identically. Self-matches (a query against its own recording) are skipped, and
queries whose work has no other performance among the references are left out and counted.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def ranking_metrics(
    distances: np.ndarray,
    query_works: Sequence[str],
    ref_works: Sequence[str],
    query_ids: Sequence[str] | None = None,
    ref_ids: Sequence[str] | None = None,
    ks: Sequence[int] = (1, 10),
) -> dict:
    """Score rankings by ascending distance (negate a similarity before calling).

    Returns {"mAP", "MR1", "top1", "top10", "queries", "skipped"} plus per-query "ap" and "rank1"
    lists (ranks are 1-based among the non-self references).
    """
    distances = np.asarray(distances, dtype=np.float64)
    if distances.shape != (len(query_works), len(ref_works)):
        raise ValueError(f"distances has shape {distances.shape}, expected ({len(query_works)}, {len(ref_works)})")
    query_works, ref_works = np.asarray(query_works), np.asarray(ref_works)
    self_mask = np.zeros(distances.shape, dtype=bool)
    if query_ids is not None and ref_ids is not None:
        self_mask = np.asarray(query_ids)[:, None] == np.asarray(ref_ids)[None, :]
    aps, first_ranks, skipped = [], [], 0
    for q in range(len(query_works)):
        keep = ~self_mask[q]
        relevant = (ref_works == query_works[q]) & keep
        if not relevant.any():
            skipped += 1
            continue
        order = np.argsort(distances[q][keep], kind="stable")
        hits = relevant[keep][order]
        hit_ranks = np.flatnonzero(hits) + 1
        precision_at_hits = np.arange(1, len(hit_ranks) + 1) / hit_ranks
        aps.append(float(precision_at_hits.mean()))
        first_ranks.append(int(hit_ranks[0]))
    out: dict = {"queries": len(aps), "skipped": skipped}
    if not aps:
        out.update({"mAP": 0.0, "MR1": float("nan"), **{f"top{k}": 0.0 for k in ks}, "ap": [], "rank1": []})
        return out
    ranks = np.asarray(first_ranks)
    out["mAP"] = float(np.mean(aps))
    out["MR1"] = float(ranks.mean())
    for k in ks:
        out[f"top{k}"] = float((ranks <= k).mean())
    out["ap"], out["rank1"] = aps, first_ranks
    return out
