"""Load a reference index folder and search it: FAISS ids mapped back to (track, offset)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from musicid.fsutil import read_json, sha256_file
from musicid.index.build import (
    DENSITY_FILE, IDS_FILE, INDEX_FILE, META_FILE, REFS_FILE, IndexSignatureError, RefIndexError, excluding,
)

REQUIRED_META = ("model_signature", "embedding_dim", "hop_s", "sample_rate", "kind", "n_vectors", "n_refs")


@dataclass
class RefIndex:
    """A loaded index: `search` returns scores, reference positions (into `refs`) and offsets."""

    index: faiss.Index
    track_index: np.ndarray  # (n_vectors,) int32 → refs
    offset_s: np.ndarray  # (n_vectors,) float32 segment start within its reference
    refs: list[dict[str, Any]]
    meta: dict[str, Any]
    path: Path = field(default_factory=Path)
    density: np.ndarray | None = None  # (n_vectors,) per segment, see build.segment_density

    @property
    def signature(self) -> str:
        return str(self.meta["model_signature"])

    @property
    def embedding_dim(self) -> int:
        return int(self.meta["embedding_dim"])

    @property
    def n_vectors(self) -> int:
        return int(self.index.ntotal)

    def vectors(self) -> np.ndarray:
        """Every indexed vector, in id order (an IVF index gets a direct map for this)."""
        ivf = faiss.try_extract_index_ivf(self.index) if not isinstance(self.index, faiss.IndexFlat) else None
        if ivf is not None:
            ivf.make_direct_map()
        return self.index.reconstruct_n(0, self.index.ntotal)

    def vector_ids(self, track: int) -> np.ndarray:
        """FAISS ids of one reference's segments."""
        return np.flatnonzero(self.track_index == track).astype(np.int64)

    def search(self, embeddings: np.ndarray, k: int, exclude_track: int | None = None,
               hub_penalty: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """k nearest reference segments per row (inner product, best first).

        Returns (scores float32 (n, k), track_index int64 (n, k), offset_s float32 (n, k)). Where
        FAISS has fewer than k results (small index, IVF cells probed) the slot is masked:
        score -inf, track_index -1, offset_s NaN. `exclude_track` searches as if that reference
        were not in the index (FAISS skips its ids): how evaluation asks "what does a query from
        a track outside the catalog score?". `hub_penalty` lowers each hit by that much times its
        segment's density above the index's median (hits on hub segments count less); it needs
        an index built with density (index.density_neighbors > 0).
        """
        queries = np.ascontiguousarray(np.atleast_2d(embeddings), dtype=np.float32)
        if queries.shape[1] != self.embedding_dim:
            raise RefIndexError(
                f"query embeddings have dimension {queries.shape[1]}, the index holds {self.embedding_dim}"
            )
        k = max(1, int(k))
        if len(queries) == 0:
            empty = np.zeros((0, k))
            return empty.astype(np.float32), empty.astype(np.int64), empty.astype(np.float32)
        if exclude_track is None:
            scores, ids = self.index.search(queries, k)
        else:
            scores, ids = self.index.search(queries, k, params=excluding(self.index, self.vector_ids(exclude_track)))
        valid = ids >= 0
        safe = np.where(valid, ids, 0)
        tracks = np.where(valid, self.track_index[safe], -1).astype(np.int64)
        offsets = np.where(valid, self.offset_s[safe], np.nan).astype(np.float32)
        if hub_penalty and self.density is not None:
            excess = self.density[safe] - np.float32(self.meta.get("density_median", 0.0))
            scores = scores - np.float32(hub_penalty) * excess
        scores = np.where(valid, scores, -np.inf).astype(np.float32)
        return scores, tracks, offsets


def _check_signature(path: Path, found: str, expected: str | None) -> None:
    if expected is not None and found != expected:
        raise IndexSignatureError(
            f"{path}: index was built with model {found} but the model in use is {expected}; "
            f"rebuild it (`musicid index build ...` or `dvc repro <family>-index`)"
        )


def _check_files(path: Path, records: dict[str, Any], hint: str) -> None:
    """Refuse a binary file that no longer matches meta.json's record (indexes from before it have none)."""
    for name, record in records.items():
        size = (path / name).stat().st_size
        if size != record["bytes"]:
            raise RefIndexError(f"{path / name}: {size} bytes but meta.json records {record['bytes']} "
                                f"(truncated or replaced); {hint}")
        if sha256_file(path / name) != record["sha256"]:
            raise RefIndexError(f"{path / name}: contents differ from the sha256 meta.json records (corrupt); {hint}")


def load_index(index_dir: str | Path, expected_signature: str | None = None, nprobe: int | None = None) -> RefIndex:
    """Read an index folder written by `build_index`.

    `expected_signature`: refuse (IndexSignatureError) an index built with another model.
    `nprobe`: IVF cells visited per query (default: the build's `index.nprobe`).
    """
    path = Path(index_dir)
    hint = "run `musicid index build` or `dvc repro <family>-index`"
    if not path.is_dir():
        raise RefIndexError(f"{path}: index not found; {hint}")
    missing = [name for name in (INDEX_FILE, IDS_FILE, REFS_FILE, META_FILE) if not (path / name).is_file()]
    if missing:
        raise RefIndexError(f"{path}: not an index folder (missing {', '.join(missing)}); {hint}")
    try:
        meta = read_json(path / META_FILE)
        refs = read_json(path / REFS_FILE)
        absent = [key for key in REQUIRED_META if key not in meta]
        if absent:
            raise ValueError(f"meta.json lacks {', '.join(absent)}")
    except (OSError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RefIndexError(f"{path}: corrupt index metadata: {str(exc).splitlines()[0]}") from None
    _check_signature(path, str(meta["model_signature"]), expected_signature)
    _check_files(path, meta.get("files") or {}, hint)
    try:
        with np.load(path / IDS_FILE) as ids:
            track_index = ids["track_index"].astype(np.int32)
            offset_s = ids["offset_s"].astype(np.float32)
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise RefIndexError(f"{path / IDS_FILE}: corrupt id map: {str(exc).splitlines()[0]}") from None
    try:
        index = faiss.read_index(str(path / INDEX_FILE))
    except RuntimeError as exc:  # faiss reports C++ exceptions as multi-line RuntimeErrors
        lines = [line for line in str(exc).splitlines() if line.strip()]
        detail = lines[0].split(": ", 1)[-1] if lines else "unreadable"
        raise RefIndexError(f"{path / INDEX_FILE}: corrupt FAISS index: {detail}") from None
    problems = []
    if index.ntotal != len(track_index) or len(track_index) != len(offset_s) or index.ntotal != meta["n_vectors"]:
        problems.append(
            f"{index.ntotal} vectors in index.faiss, {len(track_index)} in ids.npz, {meta['n_vectors']} in meta.json"
        )
    if index.d != meta["embedding_dim"]:
        problems.append(f"index dimension {index.d} differs from meta.json's {meta['embedding_dim']}")
    if not isinstance(refs, list) or len(refs) != meta["n_refs"]:
        problems.append(f"refs.json lists {len(refs) if isinstance(refs, list) else '?'} refs, meta.json {meta['n_refs']}")
    elif len(track_index) and (track_index.min() < 0 or track_index.max() >= len(refs)):
        problems.append("ids.npz points outside refs.json")
    if problems:
        raise RefIndexError(f"{path}: inconsistent index: {problems[0]}; {hint}")
    ivf = faiss.try_extract_index_ivf(index)  # None for a flat index: nothing to probe
    if ivf is not None:
        ivf.nprobe = int(max(1, min(nprobe or meta.get("nprobe") or 1, ivf.nlist)))
    density = None
    if (path / DENSITY_FILE).is_file():
        density = np.load(path / DENSITY_FILE).astype(np.float32)
        if len(density) != index.ntotal:
            raise RefIndexError(f"{path / DENSITY_FILE}: {len(density)} densities for {index.ntotal} vectors")
    return RefIndex(index, track_index, offset_s, refs, meta, path, density)
