"""The works reference index: every performance as one vector in FAISS, plus work centroids.

Folder (the spine's index format, one vector per reference at offset 0, plus):

    works.json       ref → work_id          hashes.json   ref → content hash (duplicate check)
    centroids.npz    work_ids, vectors (each work's mean embedding, re-normalised)
    vectors.npy      the indexed vectors, so `musicid works add` extends the index without re-embedding
    chroma.npz       each performance's pitch-class profile frames (meta.json "chroma": its recipe) (ragged: frames + offsets), for alignment re-ranking

`add_performances` makes a *new* index folder (a new DVC-versioned artifact): the old vectors, plus
new performances embedded by the same model; a performance whose content hash is already indexed
is skipped with a message, undecodable audio is quarantined with its reason, and an index made by
another model is refused naming both signatures.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from musicid.config import VectorIndexConfig
from musicid.errors import MusicidError
from musicid.fsutil import read_json
from musicid.index import IndexSignatureError, load_index, write_vector_index

WORKS_FILE, HASHES_FILE, CENTROIDS_FILE, VECTORS_FILE = "works.json", "hashes.json", "centroids.npz", "vectors.npy"
CHROMA_FILE = "chroma.npz"


class WorksIndexError(MusicidError):
    """A works index is missing its work map or cannot be extended as asked."""


def centroids(vectors: np.ndarray, works: list[str]) -> tuple[list[str], np.ndarray]:
    names = sorted(set(works))
    labels = np.asarray(works)
    means = np.stack([vectors[labels == w].mean(axis=0) for w in names]) if names else np.zeros((0, vectors.shape[1]))
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-9)
    return names, means.astype(np.float32)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def write_works_index(out_dir: str | Path, vectors: np.ndarray, refs: list[dict[str, Any]], signature: str,
                      sample_rate: int, cfg: VectorIndexConfig, chroma: list[np.ndarray],
                      chroma_recipe: dict[str, Any]) -> dict[str, Any]:
    """refs: [{"ref", "work_id", "content_hash", "duration_s"}] aligned with vectors and chroma (made by chroma_recipe)."""
    if len(chroma) != len(refs):
        raise WorksIndexError(f"{len(chroma)} chroma sequences for {len(refs)} performances")
    names, means = centroids(vectors, [r["work_id"] for r in refs])
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in chroma])]).astype(np.int64)
    frames = np.concatenate(chroma).astype(np.float16) if chroma else np.zeros((0, 12), np.float16)
    meta = write_vector_index(
        out_dir, vectors, [{"ref": r["ref"], "duration_s": float(r.get("duration_s", 0.0))} for r in refs],
        {"model_signature": signature, "family": "works", "hop_s": 0.0, "segment_s": 0.0, "sample_rate": sample_rate,
         "hours": round(sum(float(r.get("duration_s", 0.0)) for r in refs) / 3600, 6), "works": len(names),
         "chroma": dict(chroma_recipe)},
        cfg, extra={WORKS_FILE: {r["ref"]: r["work_id"] for r in refs},
                    HASHES_FILE: {r["ref"]: r["content_hash"] for r in refs}, VECTORS_FILE: vectors.astype(np.float32)},
    )
    (Path(out_dir) / CENTROIDS_FILE).write_bytes(_npz_bytes(work_ids=np.asarray(names), vectors=means))
    (Path(out_dir) / CHROMA_FILE).write_bytes(_npz_bytes(frames=frames, offsets=offsets))
    return meta


def load_chroma(index_dir: str | Path) -> list[np.ndarray]:
    """Each indexed performance's chroma frames (made by the recipe meta.json records), in index order."""
    path = Path(index_dir) / CHROMA_FILE
    if not path.is_file():
        raise WorksIndexError(f"{path.parent}: no {CHROMA_FILE} (an index from before alignment re-ranking); "
                              "run `dvc repro works-index`")
    with np.load(path) as data:
        frames, offsets = data["frames"], data["offsets"]
    return [frames[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


def index_chroma_recipe(meta: dict[str, Any]) -> dict[str, Any]:
    """How an index's chroma was made, from its meta.json; an index from before recipes holds the plain fold."""
    from musicid.families.works.align import PLAIN_CHROMA

    return {**PLAIN_CHROMA, **meta.get("chroma", {})}


def load_works_index(index_dir: str | Path, expected_signature: str | None = None) -> tuple[Any, dict[str, str], list[str], np.ndarray]:
    """(RefIndex, ref → work, centroid work ids, centroid vectors)."""
    index = load_index(index_dir, expected_signature=expected_signature)
    path = Path(index_dir)
    if not (path / WORKS_FILE).is_file() or not (path / CENTROIDS_FILE).is_file():
        raise WorksIndexError(f"{path}: not a works index (no {WORKS_FILE} / {CENTROIDS_FILE}); run `dvc repro works-index`")
    works = read_json(path / WORKS_FILE)
    with np.load(path / CENTROIDS_FILE) as data:
        return index, works, [str(w) for w in data["work_ids"]], data["vectors"].astype(np.float32)


def content_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def add_performances(index_dir: str | Path, out_dir: str | Path, loaded: Any, items: list[dict[str, str]],
                     cfg: VectorIndexConfig, max_duration_s: float = 300.0) -> dict[str, Any]:
    """Extend a works index with `items` [{"path", "work_id", "track_id"}] into out_dir; a report."""
    from musicid.audio import DecodeError

    index_dir = Path(index_dir)
    meta = read_json(index_dir / "meta.json") if (index_dir / "meta.json").is_file() else {}
    if meta and meta.get("model_signature") != loaded.signature:
        raise IndexSignatureError(f"{index_dir}: index was built with model {meta.get('model_signature')}, "
                                  f"the model in use is {loaded.signature}; add with the model that built it "
                                  f"or rebuild (`dvc repro works-index`)")
    recipe = index_chroma_recipe(load_index(index_dir, expected_signature=loaded.signature).meta)
    refs = read_json(index_dir / "refs.json")
    works = read_json(index_dir / WORKS_FILE)
    hashes = read_json(index_dir / HASHES_FILE)
    vectors = np.load(index_dir / VECTORS_FILE)
    chroma = load_chroma(index_dir)  # new performances' chroma is made by the index's recipe
    rows = [{"ref": r["ref"], "work_id": works[r["ref"]], "content_hash": hashes[r["ref"]],
             "duration_s": r["duration_s"]} for r in refs]
    known_hashes = {h: ref for ref, h in hashes.items()}
    known_refs = set(works)
    report: dict[str, Any] = {"added": [], "duplicates": [], "quarantined": []}
    new_vectors = []
    for item in items:
        digest = content_hash(item["path"])
        if digest in known_hashes:
            report["duplicates"].append({"track_id": item["track_id"], "same_as": known_hashes[digest]})
            continue
        if item["track_id"] in known_refs:
            report["duplicates"].append({"track_id": item["track_id"], "same_as": item["track_id"]})
            continue
        try:
            vector, item_chroma = loaded.analyse_path(item["path"], max_duration_s, recipe)
        except DecodeError as exc:
            report["quarantined"].append({"track_id": item["track_id"], "path": item["path"],
                                          "reason": f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason})
            continue
        except MusicidError as exc:  # e.g. shorter than the model's shortest chunk
            report["quarantined"].append({"track_id": item["track_id"], "path": item["path"], "reason": str(exc)})
            continue
        new_vectors.append(vector)
        chroma.append(item_chroma)
        rows.append({"ref": item["track_id"], "work_id": item["work_id"], "content_hash": digest, "duration_s": 0.0})
        known_hashes[digest], known_refs = item["track_id"], known_refs | {item["track_id"]}
        report["added"].append({"track_id": item["track_id"], "work_id": item["work_id"]})
    if new_vectors:
        vectors = np.concatenate([vectors, np.stack(new_vectors)])
    report["meta"] = write_works_index(out_dir, vectors, rows, loaded.signature, loaded.sample_rate, cfg, chroma, recipe)
    return report
