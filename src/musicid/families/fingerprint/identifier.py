"""Identify queries against a reference index with one loaded model (loaded once, reused)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from musicid.audio import DecodeError, decode, to_model_rate
from musicid.config import IdentifyConfig
from musicid.index import IndexSignatureError, RefIndex, RefIndexError, load_index
from musicid.families.fingerprint.open_set import OpenSetThreshold
from musicid.families.fingerprint.voting import vote
from musicid.families.fingerprint.io import LoadedModel, embed_signal, load_model


@dataclass
class Query:
    """A query's (segment embeddings, segment starts) per warp; the first view is the query as heard."""

    views: list[tuple[np.ndarray, np.ndarray]]

    @property
    def segments(self) -> int:
        return int(len(self.views[0][0]))


def resample_by(signal: np.ndarray, sample_rate: int, warp: float) -> np.ndarray:
    """The signal slowed by `warp` (pitch and tempo together, like a tape): undoes a query that
    plays `warp` times too fast or sits log2(warp)·12 semitones too high."""
    import librosa

    return librosa.resample(signal, orig_sr=sample_rate, target_sr=sample_rate * warp, res_type="soxr_mq").astype(np.float32)


class Identifier:
    """Embed a query every `query_hop_s`, search `neighbors` per segment, vote by offset."""

    def __init__(self, loaded: LoadedModel, index: RefIndex, cfg: IdentifyConfig | None = None,
                 open_set: dict[str, Any] | None = None) -> None:
        found = index.meta.get("model_signature")
        if found != loaded.signature:
            raise IndexSignatureError(
                f"{index.path}: index was built with model {found} but the model in use is {loaded.signature}; "
                f"rebuild it (`musicid index build ...` or `dvc repro fingerprint-index`)"
            )
        if index.embedding_dim != loaded.embedding_dim:
            raise RefIndexError(
                f"{index.path}: index holds {index.embedding_dim}-d embeddings, the model makes {loaded.embedding_dim}-d"
            )
        self.loaded = loaded
        self.index = index
        self.cfg = cfg or IdentifyConfig()
        self.open_set = OpenSetThreshold.from_dict(open_set) if open_set else None

    @classmethod
    def load(
        cls, model_dir: str | Path, index_dir: str | Path, cfg: IdentifyConfig | None = None, device: str = "auto",
        open_set: dict[str, Any] | None = None,
    ) -> "Identifier":
        loaded = load_model(model_dir, device)
        return cls(loaded, load_index(index_dir, expected_signature=loaded.signature), cfg, open_set)

    @property
    def sample_rate(self) -> int:
        return int(self.loaded.spec.sample_rate)

    @property
    def knows_threshold(self) -> bool:
        return self.cfg.min_score is not None or self.open_set is not None

    def min_score(self, segments: int) -> float | None:
        """The open-set threshold for a query of `segments` segments: fingerprint.identify.min_score
        (flat) where set, else the calibrated curve; None when neither is known."""
        if self.cfg.min_score is not None:
            return self.cfg.min_score
        return self.open_set.at(segments) if self.open_set is not None else None

    def query_embeddings(self, signal: np.ndarray) -> Query:
        """The query's segment embeddings as heard and at each of fingerprint.identify.warps."""
        signal = np.asarray(signal, dtype=np.float32)
        views = []
        for warp in self.cfg.warps:
            warped = signal if warp == 1.0 else resample_by(signal, self.sample_rate, warp)
            views.append(embed_signal(self.loaded, warped, self.cfg.query_hop_s))
        return Query(views)

    def match(self, query: Query, top: int | None = None, exclude_track: int | None = None) -> list[dict[str, Any]]:
        """Search and vote each view; per reference its best view: [{"ref", "score", "offset_s"[, "matched"]}].

        `exclude_track` answers as if that reference were not indexed (open-set calibration).
        """
        k = min(self.cfg.neighbors, max(1, self.index.n_vectors))
        top = top or self.cfg.top
        best: dict[int, tuple[float, float]] = {}
        for embeddings, starts in query.views:
            scores, tracks, offsets = self.index.search(embeddings, k, exclude_track=exclude_track,
                                                        hub_penalty=self.cfg.hub_penalty)
            for track, score, offset in vote(scores, tracks, offsets, starts, self.cfg.offset_bin_s, top):
                if track not in best or score > best[track][0]:
                    best[track] = (score, offset)
        ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))[:top]
        refs, threshold = self.index.refs, self.min_score(query.segments)
        matches = [
            {"ref": refs[track]["ref"], "score": round(score, 6), "offset_s": round(offset, 3)}
            for track, (score, offset) in ranked
        ]
        if threshold is not None:
            for found in matches:
                found["matched"] = found["score"] >= threshold
        return matches

    def identify_signal(self, signal: np.ndarray, top: int | None = None) -> list[dict[str, Any]]:
        """Matches for a mono signal at the model rate, best first."""
        return self.match(self.query_embeddings(signal), top=top)

    def identify_path(self, path: str | Path, top: int | None = None) -> dict[str, Any]:
        """{"query": path as given[, "matched"], "matches": [...]}; an undecodable file gives "error" instead.

        "matched" (when the threshold is known) says whether the best match clears it: false means
        "not in the catalog", whatever the matches list holds.
        """
        query = str(path)
        try:
            audio = decode(path)
        except DecodeError as exc:
            return {"query": query, "error": f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason, "matches": []}
        signal = to_model_rate(audio.samples, audio.sample_rate, self.sample_rate)
        views = self.query_embeddings(signal)
        matches = self.match(views, top=top)
        if not self.knows_threshold:
            return {"query": query, "matches": matches}
        return {"query": query, "matched": bool(matches) and matches[0]["matched"],
                "min_score": round(self.min_score(views.segments), 6), "matches": matches}
