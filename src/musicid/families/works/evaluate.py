"""Evaluate a work identifier on named test sets: mAP, MR1, top-1/10, reported apart; t-SNE; distances.

Named test sets (`works.evaluate.testsets`):
- `test_unseen` / `val_unseen`: every performance of works never trained on, each queried against
  all the others (all-vs-all, self-matches skipped): can it group compositions it never saw?
- `test_seen` / `val_seen`: held-out performances of trained works, queried against themselves
  plus every training performance (at speed 1.0): does it recognise new versions of known works?
Every performance is embedded whole; distance is 1 − cosine similarity. With alignment re-ranking
(`works.identify.rerank.top_k` > 0, as `identify` does it) each query's top_k are re-ordered by
chroma alignment; the headline figures are the re-ranked ones and "embedding_only" keeps the
first stage's beside them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from musicid.config import WorksRerankConfig
from musicid.families.works.align import chroma_recipe, pitch_classes, rerank_distances
from musicid.families.works.metrics import ranking_metrics
from musicid.fsutil import write_json, write_jsonl
from musicid.store.ragged import RaggedStore

TESTSETS = {
    "test_unseen": (("test_unseen",), ("test_unseen",)),
    "test_seen": (("test_seen",), ("test_seen", "train")),
    "val_unseen": (("val_unseen",), ("val_unseen",)),
    "val_seen": (("val_seen",), ("val_seen", "train")),
}


@dataclass
class Performances:
    """Whole performances (speed 1.0) with their ids, works and roles, from the feature stores."""

    track_ids: list[str]
    work_ids: list[str]
    roles: list[str]
    frames: list[np.ndarray]

    @classmethod
    def from_stores(cls, stores: list[RaggedStore], skip_roles: tuple[str, ...] = ()) -> "Performances":
        out = cls([], [], [], [])
        for store in stores:
            speeds, tracks, works, roles = (store.column(c) for c in ("speed", "track_id", "work_id", "role"))
            kept = [i for i in range(len(store)) if speeds[i] == 1.0 and roles[i] not in skip_roles]
            out.track_ids += [tracks[i] for i in kept]
            out.work_ids += [works[i] for i in kept]
            out.roles += [roles[i] for i in kept]
            out.frames += store.load_items(kept)
        return out

    def select(self, roles: tuple[str, ...]) -> np.ndarray:
        return np.array([i for i, role in enumerate(self.roles) if role in roles], dtype=np.int64)


@torch.inference_mode()
def embed_frames(model: torch.nn.Module, frames: list[np.ndarray], device: torch.device,
                 min_frames: int = 1) -> np.ndarray:
    """One embedding per whole performance (shorter ones are zero-padded to min_frames)."""
    model.eval()
    out = np.zeros((len(frames), model.spec.embedding_dim), dtype=np.float32)
    for i, item in enumerate(frames):
        x = torch.from_numpy(np.asarray(item, dtype=np.float32))
        if len(x) < min_frames:
            x = torch.nn.functional.pad(x, (0, 0, 0, min_frames - len(x)))
        out[i] = model(x[None].to(device)).float().cpu().numpy()[0]
    return out


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics[key] for key in ("mAP", "MR1", "top1", "top10")}


def score_testset(name: str, perf: Performances, embeddings: np.ndarray, rerank: WorksRerankConfig | None = None,
                  chroma: list[np.ndarray] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, distance record) of one named test set from precomputed embeddings.

    With `rerank` (top_k > 0) and each performance's folded `chroma`, the headline metrics are those
    of the re-ranked lists, and "embedding_only" keeps the first stage's for comparison.
    """
    query_roles, ref_roles = TESTSETS[name]
    q, r = perf.select(query_roles), perf.select(ref_roles)
    if not len(q) or not len(r):
        return {"queries": 0, "skipped": 0, "mAP": None, "MR1": None, "top1": None, "top10": None}, {}
    distances = 1.0 - embeddings[q] @ embeddings[r].T
    ids = np.asarray(perf.track_ids)
    works = np.asarray(perf.work_ids)
    metrics = ranking_metrics(distances, works[q], works[r], ids[q], ids[r])
    if rerank is not None and rerank.top_k > 0 and chroma is not None:
        first_stage = _summary(metrics)
        distances = rerank_distances(distances, [chroma[i] for i in q], [chroma[i] for i in r], rerank,
                                     ids[q][:, None] == ids[r][None, :])
        metrics = ranking_metrics(distances, works[q], works[r], ids[q], ids[r])
        metrics["embedding_only"] = first_stage
    record = {"distances": distances.astype(np.float32), "query_ids": ids[q], "ref_ids": ids[r],
              "query_works": works[q], "ref_works": works[r]}
    return metrics, record


def evaluate_testsets(names: list[str], perf: Performances, embeddings: np.ndarray) -> dict[str, dict[str, Any]]:
    return {name: score_testset(name, perf, embeddings)[0] for name in names}


def flat_metrics(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """{testset: {mAP, ...}} → {"test_unseen_mAP": ..., "test_unseen_mAP_embedding": ...}: the names
    MLflow, the registry and gates use (the _embedding ones: the first stage alone, before alignment)."""
    flat = {}
    for name, metrics in results.items():
        for key in ("mAP", "MR1", "top1", "top10", "queries"):
            if metrics.get(key) is not None:
                flat[f"{name}_{key}"] = float(metrics[key])
        for key, value in metrics.get("embedding_only", {}).items():
            flat[f"{name}_{key}_embedding"] = float(value)
    return flat


def plot_tsne(embeddings: np.ndarray, works: list[str], unseen: np.ndarray, out_png: Path, seed: int = 0) -> None:
    """2-D t-SNE of performance embeddings; unseen works drawn as crosses, seen ones as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    n = len(embeddings)
    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=110)
    if n >= 5:
        points = TSNE(n_components=2, perplexity=max(2.0, min(30.0, (n - 1) / 3)), init="pca",
                      random_state=seed).fit_transform(embeddings)
        names = sorted(set(works))
        colour = {w: plt.cm.tab20(i % 20) for i, w in enumerate(names)}
        for i in range(n):
            ax.scatter(points[i, 0], points[i, 1], color=colour[works[i]], marker="x" if unseen[i] else "o",
                       s=36 if unseen[i] else 18)
        ax.scatter([], [], marker="x", color="k", label="unseen works (never trained on)")
        ax.scatter([], [], marker="o", color="k", label="seen works")
        ax.legend(loc="best", fontsize=8)
    ax.set_title("work embeddings (t-SNE), one colour per work")
    ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def write_evaluation(out_dir: Path, perf: Performances, embeddings: np.ndarray, names: list[str], signature: str,
                     latency_ms: list[float], tsne: bool, rerank: WorksRerankConfig | None = None,
                     bins_per_octave: int = 12) -> dict[str, Any]:
    """metrics.json, distances_<testset>.npz (after re-ranking), queries.jsonl and tsne.png into out_dir."""
    results, rows = {}, []
    chroma = [pitch_classes(frames, bins_per_octave, rerank) for frames in perf.frames] if rerank and rerank.top_k else None
    for name in names:
        metrics, record = score_testset(name, perf, embeddings, rerank, chroma)
        per_query = {"ap": metrics.pop("ap", []), "rank1": metrics.pop("rank1", [])}
        results[name] = metrics
        if record:
            np.savez_compressed(out_dir / f"distances_{name}.npz", **record)
            kept = [qid for qid, qwork in zip(record["query_ids"], record["query_works"])
                    if ((record["ref_works"] == qwork) & (record["ref_ids"] != qid)).any()]
            rows += [{"testset": name, "query": str(qid), "ap": ap, "rank1": rank}
                     for qid, ap, rank in zip(kept, per_query["ap"], per_query["rank1"])]
    latency = np.asarray(latency_ms or [0.0])
    summary = {
        "testsets": results, "model_signature": signature, "performances": len(perf.track_ids),
        "rerank": rerank.model_dump() if rerank else None,
        "latency_ms": {"p50": float(np.percentile(latency, 50)), "p95": float(np.percentile(latency, 95)),
                       "queries": len(latency_ms)},
    }
    write_json(out_dir / "metrics.json", summary)
    write_jsonl(out_dir / "queries.jsonl", rows)
    if tsne:
        shown = perf.select(("test_unseen", "test_seen", "val_unseen", "val_seen"))
        plot_tsne(embeddings[shown], [perf.work_ids[i] for i in shown],
                  np.array([perf.roles[i].endswith("unseen") for i in shown]), out_dir / "tsne.png")
    return summary


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    began = time.perf_counter()
    value = fn()
    return value, (time.perf_counter() - began) * 1000


def evaluate_collection(loaded: Any, tracks: list[dict[str, str]], max_duration_s: float = 300.0,
                        progress: bool = True, rerank: WorksRerankConfig | None = None) -> dict[str, Any]:
    """All-vs-all ranking metrics over a folder of performances (self-matches skipped), with timings.

    Every performance is both a query and a reference. seconds_per_query = embedding the query
    (decode + CQT + network) + ranking it against every reference embedding (+ aligning its
    rerank.top_k candidates, when re-ranking; "embedding_only" then has the first stage's figures).
    """
    from tqdm import tqdm

    from musicid.audio import DecodeError
    from musicid.errors import MusicidError

    vectors, chroma, kept, skipped, embed_s = [], [], [], [], []
    for track in tqdm(tracks, desc="works: embed", unit="track", disable=not progress):
        began = time.perf_counter()
        try:
            vector, track_chroma = loaded.analyse_path(track["path"], max_duration_s,
                                                       chroma_recipe(rerank) if rerank is not None else None)
        except (DecodeError, MusicidError) as exc:
            skipped.append({"track_id": track["track_id"], "reason": str(exc)})
            continue
        embed_s.append(time.perf_counter() - began)
        vectors.append(vector)
        chroma.append(track_chroma)
        kept.append(track)
    if not kept:
        return {"queries": 0, "skipped": skipped, "mAP": None}
    matrix = np.stack(vectors)
    began = time.perf_counter()
    distances = 1.0 - matrix @ matrix.T
    ids, works = [t["track_id"] for t in kept], [t["work_id"] for t in kept]
    extra: dict[str, Any] = {}
    if rerank is not None and rerank.top_k > 0:
        extra["embedding_only"] = _summary(ranking_metrics(distances, works, works, ids, ids))
        extra["rerank"] = rerank.model_dump()
        distances = rerank_distances(distances, chroma, chroma, rerank, np.eye(len(kept), dtype=bool), progress)
    rank_s = (time.perf_counter() - began) / len(kept)
    metrics = ranking_metrics(distances, works, works, ids, ids)
    metrics.pop("ap"), metrics.pop("rank1")
    return metrics | extra | {"performances": len(kept), "works": len(set(works)), "skipped_tracks": skipped,
                      "seconds_per_query": float(np.mean(embed_s)) + rank_s, "embed_seconds_mean": float(np.mean(embed_s))}
