"""The archive: render every (work, version) in parallel workers into a tar.gz + metadata.csv."""

from __future__ import annotations

import csv
import gzip
import io
import os
import tarfile
import zlib
from collections import deque
from concurrent.futures import Future
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

from musicid.config import SynthConfig
from musicid.data.synth.compose import METADATA_COLUMNS, compose_work, work_rng
from musicid.data.synth.encode import encode_audio
from musicid.data.synth.render import render_track, track_format
from musicid.fsutil import atomic_file
from musicid.parallel import worker_pool

# ----------------------------------------------------------------------------------------------
# Archive
# ----------------------------------------------------------------------------------------------


def _track_job(job: tuple[SynthConfig, int, int]) -> tuple[dict[str, Any], bytes]:
    """Worker: render and encode one track (module-level so process pools can pickle it)."""
    cfg, work_index, version_index = job
    audio, sr, meta = render_track(work_index, version_index, cfg)
    serial = zlib.crc32(meta["track_id"].encode())
    return meta, encode_audio(audio, sr, meta["format"], serial=serial)


def _member_plan(cfg: SynthConfig) -> list[tuple[str, int, int]]:
    """(archive path, work, version) for every track, sorted by path so archives are reproducible."""
    members = []
    for w in range(cfg.n_works):
        style = compose_work(w, work_rng(cfg.seed, w)).style
        for v in range(cfg.versions_per_work):
            members.append((f"audio/{style}/w{w:04d}_v{v}.{track_format(w, v, cfg)}", w, v))
    return sorted(members)


def _run_jobs(
    jobs: list[tuple[SynthConfig, int, int]], workers: int
) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Results in job order; with workers > 1, processes render up to 8 tracks per worker ahead.

    The window keeps workers busy while the head job is a long track, yet bounds the encoded
    tracks held in memory (about 16 MB each at most).
    """
    if workers <= 1:
        yield from map(_track_job, jobs)
        return
    with worker_pool(workers, get_context("spawn")) as pool:
        pending: deque[Future[tuple[dict[str, Any], bytes]]] = deque()
        queue = iter(jobs)
        for job in queue:
            pending.append(pool.submit(_track_job, job))
            if len(pending) >= 8 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# Level 1: FLAC/Vorbis do not deflate further and WAV gains <0.5 % from higher levels.
_GZIP_LEVEL = 1


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _metadata_csv(rows: list[dict[str, Any]]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METADATA_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


_PARALLEL_MIN_AUDIO_S = 300.0


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def build_archive(
    cfg: SynthConfig, out_path: Path, progress: bool = True, workers: int | None = None
) -> list[dict[str, Any]]:
    """Render every (work, version) and write a reproducible tar.gz with audio and metadata.csv.

    Members: ``audio/<style>/<track_id>.<ext>`` sorted by path, then ``metadata.csv``; fixed
    mtime/owner and a gzip header without time or name make same config => same bytes.
    `workers` processes render in parallel (default: one per available CPU, or none for small
    archives); the result does not depend on it. Returns the metadata rows as written to the CSV.
    """
    members = _member_plan(cfg)
    n_workers = min(workers or _default_workers(), len(members))
    audio_s = len(members) * (cfg.min_duration_s + cfg.max_duration_s) / 2
    if workers is None and audio_s < _PARALLEL_MIN_AUDIO_S:
        n_workers = 1  # starting processes would cost more than it saves
    jobs = [(cfg, w, v) for _, w, v in members]
    rows: list[dict[str, Any]] = []
    with atomic_file(out_path) as tmp, tmp.open("wb") as raw:
        # filename="" and mtime=0: the gzip header carries neither the temp file's name nor a time.
        gz = gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=_GZIP_LEVEL, mtime=0)
        with (
            gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar,  # type: ignore[call-overload]
            tqdm(total=len(jobs), desc="synth", unit="track", disable=not progress) as bar,
        ):
            for (member, _, _), (meta, data) in zip(members, _run_jobs(jobs, n_workers)):
                _tar_add(tar, member, data)
                rows.append({"file": member, **{col: meta[col] for col in METADATA_COLUMNS[1:]}})
                bar.update()
            _tar_add(tar, "metadata.csv", _metadata_csv(rows))
    return rows
