"""Build a reference index: every reference track embedded every `hop_s`, in FAISS + an id map.

Index folder:

    index.faiss   faiss.write_index of IndexFlatIP / IndexIVFFlat / IndexIVFPQ (inner product)
    ids.npz       track_index int32, offset_s float32: one row per FAISS id
    refs.json     [{"ref": name, "duration_s": float}, ...]: track_index points here
    meta.json     model_signature, embedding_dim, hop_s, sample_rate, kind, n_vectors, n_refs,
                  hours, faiss_version (+ segment_s, nlist, nprobe, pq_m, pq_nbits, skipped)

Embedding is the slow part, so it is resumable: embeddings accumulate in `<out_dir>.partial/`
(`progress.json` + `part-00000.npz`, ...), one part flushed atomically every
`checkpoint_every_refs` refs. A rerun with the same model signature, hop and refs list embeds
only the refs not yet in a part; a partial folder made by anything else is discarded. The index
itself is written atomically and the partial folder removed once it is in place.
`musicid.index.distributed` has Dask workers write the same parts and merges them with `merge_parts`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import zipfile
from collections import Counter, deque
from pathlib import Path
from typing import Any, Iterator, Protocol

import faiss
import numpy as np
from tqdm import tqdm

from musicid.audio import DecodeError, decode, list_files, to_model_rate
from musicid.config import IndexConfig, VectorIndexConfig
from musicid.errors import MusicidError
from musicid.fsutil import atomic_dir, atomic_file, read_json, read_jsonl, sha256_file, write_json


class Embedder(Protocol):
    """What any family's loaded model offers the index: signed vectors for segments of a signal.

    A family that embeds whole recordings returns one vector at offset 0 (segment_s 0).
    """

    signature: str
    embedding_dim: int
    sample_rate: int
    segment_s: float

    def embed_segments(self, signal: np.ndarray, hop_s: float, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]: ...


log = logging.getLogger("musicid.index")

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.npz"
REFS_FILE = "refs.json"
META_FILE = "meta.json"
PROGRESS_FILE = "progress.json"
DENSITY_FILE = "density.npy"  # per segment: mean similarity to its nearest segments of other references
PARTIAL_SUFFIX = ".partial"
# faiss k-means wants at least this many training points per centroid (it warns below it).
MIN_POINTS_PER_CENTROID = 39
TRAIN_SEED = 1234


class RefIndexError(MusicidError):
    """A reference index is missing, corrupt or cannot be built as configured."""


class IndexSignatureError(RefIndexError):
    """The index was built with another model than the one in use."""


def partial_dir(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + PARTIAL_SUFFIX)


# --- reference lists ----------------------------------------------------------------------------


def index_refs_from_folder(folder: str | Path) -> list[tuple[str, Path]]:
    """Every audio file under `folder`, sorted, named by its POSIX path relative to `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RefIndexError(f"{folder}: not a folder of audio files")
    return [(rel, folder / rel) for rel in list_files(folder)[0]]


def index_refs_from_manifest(manifest_jsonl: str | Path, audio_root: str | Path) -> list[tuple[str, Path]]:
    """(track_id, audio_root / path) for every row of a manifest such as data/manifests/refs.jsonl."""
    manifest_jsonl, audio_root = Path(manifest_jsonl), Path(audio_root)
    if not manifest_jsonl.is_file():
        raise RefIndexError(f"{manifest_jsonl}: manifest not found (run `dvc repro prepare`)")
    try:
        rows = read_jsonl(manifest_jsonl)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RefIndexError(f"{manifest_jsonl}: not valid JSON lines: {exc}") from None
    refs = []
    for number, row in enumerate(rows, 1):
        if "track_id" not in row or "path" not in row:
            raise RefIndexError(f"{manifest_jsonl}: row {number} lacks track_id or path")
        refs.append((str(row["track_id"]), audio_root / row["path"]))
    return refs


# --- embedding with checkpoints -----------------------------------------------------------------


def _decode_ref(job: tuple[str, int]) -> tuple[np.ndarray | None, float, tuple[str, str] | None]:
    """(mono signal at the model rate, duration_s, None) or (None, 0, (reason, detail)); runs in a worker."""
    path, sample_rate = job
    try:
        audio = decode(path)
    except DecodeError as exc:
        return None, 0.0, (exc.reason, exc.detail)
    return to_model_rate(audio.samples, audio.sample_rate, sample_rate), float(audio.duration_s), None


def _embed_ref(loaded: Embedder, path: Path, cfg: IndexConfig,
               decoded: tuple[np.ndarray | None, float, tuple[str, str] | None]) -> tuple[np.ndarray, np.ndarray, float]:
    """Embed one decoded reference: (embeddings (n, dim), starts_s (n,), duration_s); DecodeError if it failed."""
    signal, duration, failure = decoded
    if failure is not None:
        raise DecodeError(*failure)
    embeddings, starts = loaded.embed_segments(signal, cfg.hop_s, cfg.batch_size)
    return embeddings, starts, duration


def _decoded(jobs: list[tuple[str, int]], workers: int) -> Iterator[tuple[np.ndarray | None, float, tuple[str, str] | None]]:
    """Decoded references in order. With workers, decoding runs ahead in worker processes (a bounded
    window, so memory stays flat) while the caller embeds: decode + resample dominate otherwise."""
    if workers <= 0:
        yield from map(_decode_ref, jobs)
        return
    from musicid.parallel import process_pool

    ahead = 2 * workers
    with process_pool(workers) as pool:
        pending = deque(pool.submit(_decode_ref, job) for job in jobs[:ahead])
        for job in jobs[ahead:]:
            yield pending.popleft().result()
            pending.append(pool.submit(_decode_ref, job))
        while pending:
            yield pending.popleft().result()


def _refs_digest(names: list[str]) -> str:
    return hashlib.sha256(json.dumps(names).encode()).hexdigest()[:16]


def _progress_header(loaded: Embedder, cfg: IndexConfig, names: list[str]) -> dict[str, Any]:
    return {
        "model_signature": loaded.signature,
        "embedding_dim": int(loaded.embedding_dim),
        "sample_rate": int(loaded.sample_rate),
        "segment_s": float(loaded.segment_s),
        "hop_s": float(cfg.hop_s),
        "n_refs": len(names),
        "refs_sha256": _refs_digest(names),
        "config": cfg.model_dump(mode="json"),
    }


def _incompatibility(found: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """Why a partial folder cannot be resumed, or None when it can."""
    if found.get("model_signature") != wanted["model_signature"]:
        return (
            f"it was embedded with model {found.get('model_signature')} but the model in use is "
            f"{wanted['model_signature']}"
        )
    for key, label in (
        ("embedding_dim", "embedding_dim"), ("sample_rate", "sample rate"), ("segment_s", "segment_s"),
        ("hop_s", "hop_s"),
    ):
        if found.get(key) != wanted[key]:
            return f"its {label} is {found.get(key)} but this build uses {wanted[key]}"
    if found.get("refs_sha256") != wanted["refs_sha256"] or found.get("n_refs") != wanted["n_refs"]:
        return f"it was made for another list of refs ({found.get('n_refs')} refs, now {wanted['n_refs']})"
    return None


def _save_part(path: Path, **arrays: np.ndarray) -> None:
    with atomic_file(path) as tmp:
        with tmp.open("wb") as handle:  # a handle, so np.savez does not append ".npz" to the temp name
            np.savez(handle, **arrays)


def _read_part_refs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as part:
        return part["ref_index_done"].astype(np.int64), part["duration_s"].astype(np.float64)


def _open_partial(partial: Path, header: dict[str, Any], adopt_unlisted: bool = False) -> list[str]:
    """Validate (or start) the partial folder; return the part files that can be reused.

    `adopt_unlisted`: a readable part file that progress.json does not list yet (written by a
    worker whose driver died before listing it) is kept and listed, unless it repeats refs already
    listed; otherwise such strays are removed."""
    progress_path = partial / PROGRESS_FILE
    if partial.exists():
        reason = None
        try:
            progress = read_json(progress_path)
            reason = _incompatibility(progress, header)
            parts = [str(name) for name in progress.get("parts", [])]
            for name in parts:  # every listed part must be readable
                _read_part_refs(partial / name)
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            reason = f"it is unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        if reason is None:
            if adopt_unlisted:
                parts = _adopt_unlisted_parts(partial, progress, parts)
            listed = set(parts) | {PROGRESS_FILE}
            for stray in partial.iterdir():  # a part written but never listed (crash in between)
                if stray.name not in listed:
                    shutil.rmtree(stray) if stray.is_dir() else stray.unlink()
            return parts
        log.warning("index: discarding partial embeddings in %s: %s; rebuilding from scratch", partial, reason)
        shutil.rmtree(partial) if partial.is_dir() else partial.unlink()
    partial.mkdir(parents=True)
    write_json(progress_path, {**header, "parts": []})
    return []


def _adopt_unlisted_parts(partial: Path, progress: dict[str, Any], parts: list[str]) -> list[str]:
    """`parts` plus every readable unlisted part whose refs no listed part has; progress.json updated."""
    done = set()
    for name in parts:
        done.update(_read_part_refs(partial / name)[0].tolist())
    adopted = list(parts)
    for stray in sorted(partial.glob("part-*.npz")):
        if stray.name in adopted:
            continue
        try:
            refs_in_part = set(_read_part_refs(stray)[0].tolist())
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            continue  # not a whole part: removed with the other strays
        if refs_in_part and not refs_in_part & done:
            adopted.append(stray.name)
            done |= refs_in_part
    if len(adopted) > len(parts):
        log.info("index: kept %d part(s) written after the last progress update", len(adopted) - len(parts))
        write_json(partial / PROGRESS_FILE, {**progress, "parts": adopted})
    return adopted


def resume_partial(
    refs: list[tuple[str, Path]], loaded: Embedder, partial: Path, cfg: IndexConfig, adopt_unlisted: bool = False
) -> tuple[dict[str, Any], list[str], list[int]]:
    """Open `partial` for these refs: (progress header, reusable part names, ref positions still to embed)."""
    names = [name for name, _ in refs]
    duplicates = [name for name, count in Counter(names).items() if count > 1]
    if duplicates:
        raise RefIndexError(f"reference name {duplicates[0]!r} appears more than once ({len(duplicates)} duplicated)")
    header = _progress_header(loaded, cfg, names)
    parts = _open_partial(partial, header, adopt_unlisted)
    done: set[int] = set()
    for name in parts:
        done.update(_read_part_refs(partial / name)[0].tolist())
    if done:
        log.info("index: resuming: %d of %d refs already embedded", len(done), len(refs))
    return header, parts, [i for i in range(len(refs)) if i not in done]


def write_part(path: Path, embedded: list[tuple[int, np.ndarray, np.ndarray, float]]) -> None:
    """One part file from (ref position, embeddings, starts_s, duration_s) rows, written atomically."""
    _save_part(
        path,
        embeddings=np.concatenate([row[1] for row in embedded]).astype(np.float32),
        ref_index=np.concatenate([np.full(len(row[1]), row[0], dtype=np.int64) for row in embedded]),
        offset_s=np.concatenate([row[2] for row in embedded]).astype(np.float32),
        ref_index_done=np.array([row[0] for row in embedded], dtype=np.int64),
        duration_s=np.array([row[3] for row in embedded], dtype=np.float64),
    )


def list_parts(partial: Path, header: dict[str, Any], parts: list[str]) -> None:
    """Record `parts` in progress.json: a part counts (survives a resume) once listed here."""
    write_json(partial / PROGRESS_FILE, {**header, "parts": parts})


def embed_refs(
    refs: list[tuple[str, Path]], loaded: Embedder, partial: Path, cfg: IndexConfig, progress: bool = True
) -> tuple[list[str], list[dict[str, Any]]]:
    """Embed every ref not yet in `partial`; return (part file names, skipped refs)."""
    header, parts, pending = resume_partial(refs, loaded, partial, cfg)
    done = len(refs) - len(pending)

    skipped: list[dict[str, Any]] = []
    buffer: list[tuple[int, np.ndarray, np.ndarray, float]] = []

    def flush() -> None:
        if not buffer:
            return
        name = f"part-{len(parts):05d}.npz"
        write_part(partial / name, buffer)
        parts.append(name)
        list_parts(partial, header, parts)
        buffer.clear()

    jobs = [(str(refs[i][1]), int(loaded.sample_rate)) for i in pending]
    with tqdm(total=len(refs), initial=done, desc="index: embed refs", unit="ref", disable=not progress) as bar:
        for i, decoded in zip(pending, _decoded(jobs, cfg.decode_workers)):
            name, path = refs[i]
            try:
                embeddings, starts, duration = _embed_ref(loaded, Path(path), cfg, decoded)
            except DecodeError as exc:
                log.warning("index: skipping %s (%s): %s", name, path, exc)
                skipped.append({"ref": name, "path": str(path), "reason": exc.reason, "detail": exc.detail})
            else:
                buffer.append((i, embeddings, starts, duration))
                if len(buffer) >= cfg.checkpoint_every_refs:
                    flush()
            bar.update()
        flush()
    return parts, skipped


# --- FAISS --------------------------------------------------------------------------------------


def _iter_parts(partial: Path, parts: list[str]):
    """Parts in reference order (each part holds refs in ascending order, parts are disjoint)."""
    firsts = []
    for name in parts:
        ref_done, _ = _read_part_refs(partial / name)
        firsts.append((int(ref_done.min()) if len(ref_done) else -1, name))
    for _, name in sorted(firsts):
        with np.load(partial / name) as part:
            yield {key: part[key] for key in part.files}


def _make_faiss_index(
    cfg: VectorIndexConfig, dim: int, n_vectors: int, sample: np.ndarray | None
) -> tuple[faiss.Index, dict[str, Any]]:
    """An empty (trained) index of `cfg.kind` and what was actually used (nlist, pq bits)."""
    if cfg.kind == "flat":
        return faiss.IndexFlatIP(dim), {}
    nlist = max(1, min(cfg.nlist, n_vectors // MIN_POINTS_PER_CENTROID))
    if nlist != cfg.nlist:
        log.warning(
            "index: nlist %d → %d: %d vectors support at most %d cells (faiss wants ≥ %d training points per cell)",
            cfg.nlist, nlist, n_vectors, nlist, MIN_POINTS_PER_CENTROID,
        )
    quantizer = faiss.IndexFlatIP(dim)
    used: dict[str, Any] = {"nlist": nlist, "nprobe": min(cfg.nprobe, nlist)}
    if cfg.kind == "ivf_flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        nbits = int(max(1, min(8, math.floor(math.log2(max(2, n_vectors // MIN_POINTS_PER_CENTROID))))))
        if nbits != 8:
            log.warning(
                "index: PQ codes use %d bits instead of 8: %d vectors cannot train %d centroids per sub-quantiser",
                nbits, n_vectors, 256,
            )
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, cfg.pq_m, nbits, faiss.METRIC_INNER_PRODUCT)
        index.pq.cp.min_points_per_centroid = 1  # we chose nbits for the data; don't let faiss nag
        used.update(pq_m=cfg.pq_m, pq_nbits=nbits)
    index.cp.min_points_per_centroid = 1
    index.cp.seed = TRAIN_SEED
    index.train(sample)  # (faiss' Python constructor keeps `quantizer` alive alongside `index`)
    return index, used


def _training_sample(partial: Path, parts: list[str], n_vectors: int, cfg: IndexConfig) -> np.ndarray:
    limit = 256 * max(cfg.nlist, 256)
    rng = np.random.default_rng(TRAIN_SEED)
    chosen = np.sort(rng.choice(n_vectors, size=min(limit, n_vectors), replace=False))
    rows, start = [], 0
    for part in _iter_parts(partial, parts):
        stop = start + len(part["embeddings"])
        local = chosen[(chosen >= start) & (chosen < stop)] - start
        rows.append(part["embeddings"][local])
        start = stop
    return np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)


def excluding(index: faiss.Index, ids: np.ndarray) -> faiss.SearchParameters:
    """Search parameters that skip `ids` (as if they were not indexed), keeping an IVF index's nprobe."""
    selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64)))
    ivf = faiss.try_extract_index_ivf(index) if not isinstance(index, faiss.IndexFlat) else None
    return faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nprobe) if ivf is not None else faiss.SearchParameters(sel=selector)


def segment_density(index: faiss.Index, vectors: np.ndarray, track_index: np.ndarray, k: int,
                    progress: bool = True) -> np.ndarray:
    """Per indexed segment: mean similarity to its k nearest segments of *other* references.

    Why: a hub is a reference whose segments sit where many other tracks' segments are (quiet,
    stationary or generic passages); degraded queries land on them. Knowing each segment's
    neighbourhood density lets search discount hits on dense segments (CSLS, Lample et al. 2018).
    """
    density = np.zeros(len(vectors), dtype=np.float32)
    order = np.argsort(track_index, kind="stable")
    bounds = np.flatnonzero(np.diff(track_index[order])) + 1
    for ids in tqdm(np.split(order, bounds), desc="index: segment density", unit="ref", disable=not progress):
        scores, found = index.search(np.ascontiguousarray(vectors[ids]), k, params=excluding(index, ids))
        scores = np.where(found >= 0, scores, np.nan)
        density[ids] = np.nan_to_num(np.nanmean(scores, axis=1), nan=0.0) if scores.size else 0.0
    return density


def build_index(
    refs: list[tuple[str, Path]], loaded: Embedder, out_dir: str | Path, cfg: IndexConfig, progress: bool = True
) -> dict[str, Any]:
    """Embed `refs` (name, audio path) with `loaded` and write the index folder; return its meta."""
    check_buildable(refs, loaded, cfg)
    partial = partial_dir(out_dir)
    parts, skipped = embed_refs(refs, loaded, partial, cfg, progress=progress)
    return merge_parts(refs, loaded, partial, parts, skipped, out_dir, cfg, progress)


def check_buildable(refs: list[tuple[str, Path]], loaded: Embedder, cfg: IndexConfig) -> None:
    """Refuse a build that cannot succeed before any embedding is spent on it."""
    dim = int(loaded.embedding_dim)
    if cfg.kind == "ivf_pq" and dim % cfg.pq_m:
        raise RefIndexError(f"index.pq_m ({cfg.pq_m}) must divide the embedding dimension ({dim})")
    if not refs:
        raise RefIndexError("no reference audio to index")


def merge_parts(
    refs: list[tuple[str, Path]], loaded: Embedder, partial: Path, parts: list[str], skipped: list[dict[str, Any]],
    out_dir: str | Path, cfg: IndexConfig, progress: bool = True,
) -> dict[str, Any]:
    """The embedded parts (whoever wrote them) → the index folder, in ref order; return its meta."""
    out_dir = Path(out_dir)
    dim = int(loaded.embedding_dim)
    done, durations = [], []
    for name in parts:
        ref_done, duration = _read_part_refs(partial / name)
        done.append(ref_done)
        durations.append(duration)
    done_arr = np.concatenate(done) if done else np.zeros(0, dtype=np.int64)
    duration_arr = np.concatenate(durations) if durations else np.zeros(0)
    if not len(done_arr):
        shutil.rmtree(partial, ignore_errors=True)
        raise RefIndexError(f"none of the {len(refs)} reference file(s) could be decoded; nothing to index")
    order = np.argsort(done_arr, kind="stable")
    done_arr, duration_arr = done_arr[order], duration_arr[order]
    compact = np.full(len(refs), -1, dtype=np.int64)  # input position → position in refs.json
    compact[done_arr] = np.arange(len(done_arr))
    n_vectors = 0
    for name in parts:
        with np.load(partial / name) as part:
            n_vectors += int(part["ref_index"].shape[0])

    sample = _training_sample(partial, parts, n_vectors, cfg) if cfg.kind != "flat" else None
    index, used = _make_faiss_index(cfg, dim, n_vectors, sample)
    track_index, offset_s = [], []
    for part in _iter_parts(partial, parts):
        index.add(np.ascontiguousarray(part["embeddings"], dtype=np.float32))
        track_index.append(compact[part["ref_index"]].astype(np.int32))
        offset_s.append(part["offset_s"].astype(np.float32))
    density = None
    if cfg.density_neighbors > 0 and len(done_arr) > 1:
        if ivf := (faiss.try_extract_index_ivf(index) if cfg.kind != "flat" else None):
            ivf.nprobe = used.get("nprobe", cfg.nprobe)
        vectors = np.concatenate([part["embeddings"] for part in _iter_parts(partial, parts)]).astype(np.float32)
        density = segment_density(index, vectors, np.concatenate(track_index), cfg.density_neighbors, progress)

    meta = {
        "model_signature": loaded.signature,
        "embedding_dim": dim,
        "hop_s": float(cfg.hop_s),
        "segment_s": float(loaded.segment_s),
        "sample_rate": int(loaded.sample_rate),
        "kind": cfg.kind,
        "n_vectors": int(index.ntotal),
        "n_refs": int(len(done_arr)),
        "hours": round(float(duration_arr.sum()) / 3600.0, 6),
        "faiss_version": faiss.__version__,
        "skipped": skipped,
        **used,
    }
    ref_rows = [{"ref": refs[i][0], "duration_s": round(float(d), 6)} for i, d in zip(done_arr.tolist(), duration_arr)]
    with atomic_dir(out_dir) as staging:
        faiss.write_index(index, str(staging / INDEX_FILE))
        with (staging / IDS_FILE).open("wb") as handle:
            np.savez(handle, track_index=np.concatenate(track_index), offset_s=np.concatenate(offset_s))
        write_json(staging / REFS_FILE, ref_rows)
        if density is not None:
            np.save(staging / DENSITY_FILE, density.astype(np.float16))
            meta |= {"density_neighbors": cfg.density_neighbors, "density_median": round(float(np.median(density)), 6)}
        meta["files"] = file_records(staging)
        write_json(staging / META_FILE, meta)
    shutil.rmtree(partial, ignore_errors=True)
    return meta


def file_records(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of the index's binary files, recorded in meta.json: `load_index` refuses a file
    that no longer matches (truncated, bit-flipped, replaced) instead of searching it."""
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
            for name in (INDEX_FILE, IDS_FILE)}


def write_vector_index(
    out_dir: str | Path, vectors: np.ndarray, refs: list[dict[str, Any]], meta: dict[str, Any], cfg: VectorIndexConfig,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One vector per reference (a family that embeds whole recordings) → an index folder; its meta.

    Same folder format as `build_index` (every offset 0), so `load_index` reads either; `extra`
    maps file names to data written beside it: numpy arrays as .npy, anything else as JSON (e.g. a
    family's label maps, or the vectors themselves so the index can be extended or rebuilt).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not len(vectors):
        raise RefIndexError("no reference vectors to index")
    if len(vectors) != len(refs):
        raise RefIndexError(f"{len(vectors)} vectors for {len(refs)} references")
    dim = int(vectors.shape[1])
    if cfg.kind == "ivf_pq" and dim % cfg.pq_m:
        raise RefIndexError(f"index.pq_m ({cfg.pq_m}) must divide the embedding dimension ({dim})")
    index, used = _make_faiss_index(cfg, dim, len(vectors), vectors if cfg.kind != "flat" else None)
    index.add(vectors)
    meta = {**meta, "embedding_dim": dim, "kind": cfg.kind, "n_vectors": int(index.ntotal), "n_refs": len(refs),
            "faiss_version": faiss.__version__, **used}
    with atomic_dir(out_dir) as staging:
        faiss.write_index(index, str(staging / INDEX_FILE))
        with (staging / IDS_FILE).open("wb") as handle:
            np.savez(handle, track_index=np.arange(len(refs), dtype=np.int32), offset_s=np.zeros(len(refs), np.float32))
        write_json(staging / REFS_FILE, refs)
        meta["files"] = file_records(staging)
        write_json(staging / META_FILE, meta)
        for name, data in (extra or {}).items():
            if isinstance(data, np.ndarray):
                np.save(staging / name, data)
            else:
                write_json(staging / name, data)
    return meta


__all__ = [
    "IndexSignatureError",
    "RefIndexError",
    "build_index",
    "check_buildable",
    "write_vector_index",
    "embed_refs",
    "list_parts",
    "merge_parts",
    "resume_partial",
    "write_part",
    "index_refs_from_folder",
    "index_refs_from_manifest",
    "partial_dir",
]
