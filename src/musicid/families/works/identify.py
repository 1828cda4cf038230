"""Rank works for a performance: embed it, search the performances (or the work centroids), group by work.

By performance (default): the `neighbors` nearest reference performances, each work scored by its
best (highest cosine) performance; then the `rerank.top_k` nearest are aligned with the query's
chroma (musicid.families.works.align) and works are ordered by their best alignment, ahead of the
works that were not aligned. By centroid (`--centroids`): each work scored by its centroid, no
alignment. Either way the answer lists works best first with their score (cosine), their alignment
score where aligned, and the nearest performances.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from musicid.audio import DecodeError
from musicid.config import WorksIdentifyConfig
from musicid.errors import MusicidError
from musicid.families.works.align import Aligner
from musicid.families.works.index import index_chroma_recipe, load_chroma, load_works_index
from musicid.families.works.io import LoadedWorkModel, load_model


class WorkIdentifier:
    def __init__(self, loaded: LoadedWorkModel, index_dir: str | Path, cfg: WorksIdentifyConfig | None = None) -> None:
        self.loaded, self.cfg = loaded, cfg or WorksIdentifyConfig()
        self.index, self.works, self.centroid_works, self.centroid_vectors = load_works_index(
            index_dir, expected_signature=loaded.signature)
        self.chroma = load_chroma(index_dir) if self.cfg.rerank.top_k > 0 else []
        self.chroma_recipe = index_chroma_recipe(self.index.meta)  # queries' chroma made as the references' was

    @classmethod
    def load(cls, model_dir: str | Path, index_dir: str | Path, cfg: WorksIdentifyConfig | None = None,
             device: str = "auto") -> "WorkIdentifier":
        return cls(load_model(model_dir, device), index_dir, cfg)

    def rank(self, embedding: np.ndarray, top: int | None = None, use_centroids: bool | None = None,
             chroma: np.ndarray | None = None) -> list[dict[str, Any]]:
        top = top or self.cfg.top
        use_centroids = self.cfg.centroids if use_centroids is None else use_centroids
        rerank = self.cfg.rerank.top_k if (chroma is not None and not use_centroids) else 0
        k = min(max(self.cfg.neighbors, top, rerank), self.index.n_vectors)
        scores, tracks, _ = self.index.search(embedding[None], k)
        aligner = Aligner(chroma, self.cfg.rerank) if rerank else None
        performances = []
        for position, (score, track) in enumerate(zip(scores[0], tracks[0])):
            if track < 0:
                continue
            ref = self.index.refs[track]["ref"]
            found = {"ref": ref, "score": round(float(score), 6)}
            if aligner is not None and position < rerank:
                found["alignment"] = round(aligner.score(self.chroma[track]), 6)
            performances.append(found)
        performances.sort(key=lambda p: (-p.get("alignment", -np.inf), -p["score"]))
        nearest: dict[str, list[dict[str, Any]]] = {}
        for found in performances:
            nearest.setdefault(self.works[found["ref"]], []).append(found)
        if use_centroids:
            sims = self.centroid_vectors @ embedding
            order = np.argsort(-sims, kind="stable")[:top]
            ranked = [(self.centroid_works[i], float(sims[i])) for i in order]
        else:  # performances are already in answer order, so each work's first is its best
            ranked = [(w, max(p["score"] for p in found)) for w, found in nearest.items()][:top]
        answer = []
        for work, score in ranked:
            entry = {"work_id": work, "score": round(score, 6), "performances": nearest.get(work, [])[:3]}
            if entry["performances"] and "alignment" in entry["performances"][0]:
                entry["alignment"] = entry["performances"][0]["alignment"]
            answer.append(entry)
        return answer

    def identify_path(self, path: str | Path, top: int | None = None, use_centroids: bool | None = None) -> dict[str, Any]:
        """{"query", "works": [{"work_id", "score", "performances": [{"ref", "score"}]}]} or "error"."""
        query = str(path)
        try:
            embedding, chroma = self.loaded.analyse_path(path, chroma_recipe=self.chroma_recipe)
        except DecodeError as exc:
            return {"query": query, "error": f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason, "works": []}
        except MusicidError as exc:
            return {"query": query, "error": str(exc), "works": []}
        return {"query": query, "works": self.rank(embedding, top, use_centroids, chroma)}
