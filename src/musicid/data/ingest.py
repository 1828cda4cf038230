"""Turn a raw source (archive or folder) into a catalog of decodable tracks plus a quarantine.

Every audio file is decoded and measured. Files that are empty, truncated, undecodable, too short
or silent are quarantined with their reason (and kept, under `quarantine/`), the rest goes on.
Track metadata (work, version, title, style) comes from a metadata CSV when the source has one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

from musicid.audio import DecodeError, decode, list_files, measure
from musicid.config import IngestConfig
from musicid.data.archive import extract_archive, source_kind
from musicid.data.sources import load_metadata
from musicid.fsutil import atomic_dir, write_json
from musicid.parallel import process_pool

CATALOG = "catalog.json"
QUARANTINE = "quarantine.json"


@dataclass
class ScanResult:
    tracks: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # non-audio files (metadata, artwork, ...)


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _probe(args: tuple[str, str, float, float, float]) -> dict[str, Any]:
    """Decode and measure one file (runs in a worker process); never raises."""
    root, rel, min_duration, threshold_db, max_silent = args
    path = Path(root) / rel
    base = {"source_path": rel, "bytes": path.stat().st_size}
    try:
        audio = decode(path)
    except DecodeError as exc:
        return {**base, "reason": exc.reason, "detail": exc.detail}
    stats = measure(audio.samples, audio.sample_rate, threshold_db)
    record = {
        **base,
        "format": audio.format,
        "subtype": audio.subtype,
        "decoder": audio.decoder,
        "sample_rate": audio.sample_rate,
        "channels": audio.channels,
        "frames": audio.frames,
        **stats.as_dict(),
        "sha256": _sha256(path),
    }
    if stats.duration_s < min_duration:
        return {**record, "reason": "too_short", "detail": f"{stats.duration_s:.2f} s < {min_duration} s"}
    if stats.silent_fraction > max_silent:
        return {
            **record,
            "reason": "silent",
            "detail": f"{stats.silent_fraction:.0%} of the file is below {threshold_db} dBFS",
        }
    return record


def _attach_metadata(record: dict[str, Any], metadata: dict[str, dict[str, str]]) -> dict[str, Any]:
    rel = record["source_path"]
    row = metadata.get(rel) or metadata.get(Path(rel).stem) or {}
    track_id = (row.get("track_id") or rel).strip()
    version = row.get("version", "")
    return {
        **record,
        "track_id": track_id,
        "work_id": (row.get("work_id") or track_id).strip(),
        "version": int(version) if str(version).strip().lstrip("-").isdigit() else 0,
        "title": (row.get("title") or Path(rel).stem).strip(),
        "style": (row.get("style") or "").strip(),
        # open catalogs also carry an artist and their official split (fma, mtg_jamendo)
        **{key: (row.get(field) or "").strip() for key, field in (("artist", "artist"), ("source_split", "split"))
           if (row.get(field) or "").strip()},
    }


def scan_folder(root: str | Path, cfg: IngestConfig, workers: int | None = None, progress: bool = True) -> ScanResult:
    """Decode and measure every audio file under `root`; classify into tracks and quarantine."""
    root = Path(root)
    audio_files, other_files = list_files(root)
    metadata = load_metadata(root, cfg.source_type, cfg.metadata)
    jobs = [(str(root), rel, cfg.min_duration_s, cfg.silence_threshold_db, cfg.max_silent_fraction) for rel in audio_files]
    workers = workers or default_workers()
    result = ScanResult(ignored=other_files)
    bar = tqdm(total=len(jobs), desc="ingest: decode + measure", unit="file", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        with process_pool(workers) as pool:
            probes: Iterator[dict[str, Any]] = pool.map(_probe, jobs, chunksize=4)
            for probe in probes:
                _classify(probe, metadata, result)
                bar.update()
    else:
        for job in jobs:
            _classify(_probe(job), metadata, result)
            bar.update()
    bar.close()
    _check_unique_track_ids(result)
    return result


def _classify(probe: dict[str, Any], metadata: dict[str, dict[str, str]], result: ScanResult) -> None:
    if "reason" in probe:
        result.quarantined.append(probe)
    else:
        result.tracks.append(_attach_metadata(probe, metadata))


def _check_unique_track_ids(result: ScanResult) -> None:
    seen: dict[str, dict[str, Any]] = {}
    kept = []
    for track in result.tracks:
        first = seen.get(track["track_id"])
        if first is not None:
            result.quarantined.append(
                {**track, "reason": "duplicate_track_id", "detail": f"same track_id as {first['source_path']}"}
            )
            continue
        seen[track["track_id"]] = track
        kept.append(track)
    result.tracks = kept


def scan_source(source: str | Path, cfg: IngestConfig, workers: int | None = None, progress: bool = True) -> ScanResult:
    """Scan a folder in place, or verify + extract an archive to a temporary folder and scan that."""
    source = Path(source)
    if source_kind(source) == "folder":
        return scan_folder(source, cfg, workers, progress)
    with tempfile.TemporaryDirectory(prefix="musicid-scan-") as tmp:
        extract_archive(source, tmp)
        return scan_folder(tmp, cfg, workers, progress)


def _transfer(root: Path, rel: str, dest_root: Path, move: bool) -> None:
    """Move files out of our own extraction folder; copy from a user's folder (never touch it).

    Symlinks are always copied as the file they point to, so no link ends up in an artifact.
    """
    target = dest_root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    source = root / rel
    (shutil.move if move and not source.is_symlink() else shutil.copy2)(source, target)


def ingest(source: str | Path, out_dir: str | Path, cfg: IngestConfig, workers: int | None = None, progress: bool = True) -> ScanResult:
    """Write `out_dir/{audio/, quarantine/, catalog.json, quarantine.json}` atomically.

    Catalog paths are relative to `out_dir`; quarantined files are kept with their reason so
    nothing is lost and a fixed file can be re-ingested.
    """
    source = Path(source)
    with atomic_dir(out_dir) as staging:
        extracted = source_kind(source) != "folder"
        root = source
        if extracted:
            root = staging / "_extracted"
            extract_archive(source, root)
        result = scan_folder(root, cfg, workers, progress)
        for track in result.tracks:
            _transfer(root, track["source_path"], staging / "audio", extracted)
            track["path"] = f"audio/{track['source_path']}"
        for entry in result.quarantined:
            _transfer(root, entry["source_path"], staging / "quarantine", extracted)
            entry["path"] = f"quarantine/{entry['source_path']}"
        if extracted:
            shutil.rmtree(root)
        result.tracks.sort(key=lambda t: t["track_id"])
        write_json(staging / CATALOG, {"source": str(source), "tracks": result.tracks})
        write_json(staging / QUARANTINE, {"source": str(source), "files": result.quarantined})
    return result
