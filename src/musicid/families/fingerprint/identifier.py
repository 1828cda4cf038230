"""Identify queries against a reference index with one loaded model (loaded once, reused)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from musicid.audio import DecodeError, decode, to_model_rate
from musicid.config import IdentifyConfig
from musicid.index import IndexSignatureError, RefIndex, RefIndexError, load_index
from musicid.families.fingerprint.voting import vote
from musicid.families.fingerprint.io import LoadedModel, embed_signal, load_model


class Identifier:
    """Embed a query every `query_hop_s`, search `neighbors` per segment, vote by offset."""

    def __init__(self, loaded: LoadedModel, index: RefIndex, cfg: IdentifyConfig | None = None) -> None:
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

    @classmethod
    def load(
        cls, model_dir: str | Path, index_dir: str | Path, cfg: IdentifyConfig | None = None, device: str = "auto"
    ) -> "Identifier":
        loaded = load_model(model_dir, device)
        return cls(loaded, load_index(index_dir, expected_signature=loaded.signature), cfg)

    @property
    def sample_rate(self) -> int:
        return int(self.loaded.spec.sample_rate)

    def identify_signal(self, signal: np.ndarray, top: int | None = None) -> list[dict[str, Any]]:
        """Matches for a mono signal at the model rate: [{"ref", "score", "offset_s"}], best first."""
        embeddings, starts = embed_signal(self.loaded, np.asarray(signal, dtype=np.float32), self.cfg.query_hop_s)
        k = min(self.cfg.neighbors, max(1, self.index.n_vectors))
        scores, tracks, offsets = self.index.search(embeddings, k)
        ranked = vote(scores, tracks, offsets, starts, self.cfg.offset_bin_s, top or self.cfg.top)
        refs = self.index.refs
        return [
            {"ref": refs[track]["ref"], "score": round(score, 6), "offset_s": round(offset, 3)}
            for track, score, offset in ranked
        ]

    def identify_path(self, path: str | Path, top: int | None = None) -> dict[str, Any]:
        """{"query": path as given, "matches": [...]}; an undecodable file gives "error" instead."""
        query = str(path)
        try:
            audio = decode(path)
        except DecodeError as exc:
            return {"query": query, "error": f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason, "matches": []}
        signal = to_model_rate(audio.samples, audio.sample_rate, self.sample_rate)
        return {"query": query, "matches": self.identify_signal(signal, top)}
