"""Rank works for a performance: embed it, search the performances (or the work centroids), group by work.

By performance (default): the `neighbors` nearest reference performances, each work scored by its
best (highest cosine) performance. By centroid (`--centroids`): each work scored by its centroid.
Either way the answer lists works best first with their score and the nearest performances.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from musicid.audio import DecodeError
from musicid.config import WorksIdentifyConfig
from musicid.errors import MusicidError
from musicid.families.works.index import load_works_index
from musicid.families.works.io import LoadedWorkModel, load_model


class WorkIdentifier:
    def __init__(self, loaded: LoadedWorkModel, index_dir: str | Path, cfg: WorksIdentifyConfig | None = None) -> None:
        self.loaded, self.cfg = loaded, cfg or WorksIdentifyConfig()
        self.index, self.works, self.centroid_works, self.centroid_vectors = load_works_index(
            index_dir, expected_signature=loaded.signature)

    @classmethod
    def load(cls, model_dir: str | Path, index_dir: str | Path, cfg: WorksIdentifyConfig | None = None,
             device: str = "auto") -> "WorkIdentifier":
        return cls(load_model(model_dir, device), index_dir, cfg)

    def rank(self, embedding: np.ndarray, top: int | None = None, use_centroids: bool | None = None) -> list[dict[str, Any]]:
        top = top or self.cfg.top
        use_centroids = self.cfg.centroids if use_centroids is None else use_centroids
        k = min(max(self.cfg.neighbors, top), self.index.n_vectors)
        scores, tracks, _ = self.index.search(embedding[None], k)
        nearest: dict[str, list[dict[str, Any]]] = {}
        for score, track in zip(scores[0], tracks[0]):
            if track < 0:
                continue
            ref = self.index.refs[track]["ref"]
            nearest.setdefault(self.works[ref], []).append({"ref": ref, "score": round(float(score), 6)})
        if use_centroids:
            sims = self.centroid_vectors @ embedding
            order = np.argsort(-sims, kind="stable")[:top]
            ranked = [(self.centroid_works[i], float(sims[i])) for i in order]
        else:
            ranked = sorted(((w, p[0]["score"]) for w, p in nearest.items()), key=lambda x: -x[1])[:top]
        return [{"work_id": work, "score": round(score, 6), "performances": nearest.get(work, [])[:3]}
                for work, score in ranked]

    def identify_path(self, path: str | Path, top: int | None = None, use_centroids: bool | None = None) -> dict[str, Any]:
        """{"query", "works": [{"work_id", "score", "performances": [{"ref", "score"}]}]} or "error"."""
        query = str(path)
        try:
            embedding = self.loaded.embed_path(path)
        except DecodeError as exc:
            return {"query": query, "error": f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason, "works": []}
        except MusicidError as exc:
            return {"query": query, "error": str(exc), "works": []}
        return {"query": query, "works": self.rank(embedding, top, use_centroids)}
