"""Ragged Zarr v3 stores: variable-length feature sequences (one per item) in one 2-D array.

Why ragged: whole performances (CQT frames × bins) differ in length; one array of all frames plus
per-item offsets keeps a store at a handful of shard files however many items it holds, and any
item is one contiguous row range.

Layout (ragged format_version 1)::

    <split>.zarr/         zarr v3 group; attrs: ragged_format_version, items, frames, width, dtype,
                          compressor, level, rows_per_chunk, rows_per_shard, plus `columns`: a dict
                          of per-item lists (ids, labels, ...) and any extra attrs given
      frames              (total_frames, width) in `dtype`, chunked and sharded along rows only
      offsets             (items + 1,) int64: item i is frames[offsets[i]:offsets[i + 1]]

Writing streams items to a spool file, then copies it into the Zarr array shard by shard (whole
shards only, as zarr's sharding codec wants), so memory stays bounded by one shard. Everything
happens in a temporary sibling renamed into place when complete.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import zarr

from musicid.errors import MusicidError
from musicid.fsutil import atomic_dir
from musicid.store.shard_decoding import checked_read
from musicid.store.writer import make_compressors

RAGGED_FORMAT_VERSION = 1
MIB = 1 << 20


class RaggedStoreError(MusicidError, ValueError):
    """A ragged store is missing, incomplete or not what a reader expects."""


def write_ragged_store(
    path: str | Path, items: Iterable[tuple[np.ndarray, dict[str, Any]]], width: int, dtype: str = "float16",
    compressor: str = "zstd", level: int = 3, chunk_mb: float = 1.0, shard_mb: float = 64.0,
    attrs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write (frames (n, width), columns) items; return the store's attrs.

    Every item's `columns` dict must have the same keys; they become per-item lists in attrs.
    """
    path = Path(path)
    row_bytes = width * np.dtype(dtype).itemsize
    with atomic_dir(path) as staging:
        spool_path = staging / ".spool"
        lengths: list[int] = []
        columns: dict[str, list[Any]] = {}
        with spool_path.open("wb") as spool:
            for frames, cols in items:
                frames = np.asarray(frames)
                if frames.ndim != 2 or frames.shape[1] != width:
                    raise RaggedStoreError(f"{path}: item {len(lengths)} has shape {frames.shape}, expected (n, {width})")
                spool.write(np.ascontiguousarray(frames, dtype=dtype).tobytes())
                lengths.append(len(frames))
                if columns and set(cols) != set(columns):
                    raise RaggedStoreError(f"{path}: item {len(lengths) - 1} has columns {sorted(cols)}, "
                                           f"expected {sorted(columns)}")
                for key, value in cols.items():
                    columns.setdefault(key, []).append(value)
        total = int(sum(lengths))
        rows_per_shard = min(max(1, int(shard_mb * MIB // max(1, row_bytes))), max(1, total))
        # ~chunk_mb per chunk whatever the total (a divisor of an arbitrary frame count can be tiny:
        # 41 332 = 4 × 10 333 made 4-row chunks, a 3.5 s read of 16 MB); the shard holds whole chunks
        # and the last one may reach past the array's end, which zarr allows
        rows_per_chunk = min(max(1, int(chunk_mb * MIB // max(1, row_bytes))), rows_per_shard)
        rows_per_shard = math.ceil(rows_per_shard / rows_per_chunk) * rows_per_chunk
        group = zarr.open_group(staging / "store", mode="w", zarr_format=3)
        array = group.create_array(
            "frames", shape=(total, width), dtype=dtype, chunks=(rows_per_chunk, width),
            shards=(rows_per_shard, width), compressors=make_compressors(compressor, level), fill_value=0,
        )
        spooled = np.memmap(spool_path, dtype=dtype, mode="r", shape=(total, width)) if total else None
        for start in range(0, total, rows_per_shard):
            stop = min(total, start + rows_per_shard)
            array[start:stop] = np.asarray(spooled[start:stop])
        del spooled
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        group.create_array("offsets", shape=offsets.shape, dtype="int64", chunks=(max(1, len(offsets)),),
                           compressors=make_compressors("none", 0))[:] = offsets
        meta = {
            "ragged_format_version": RAGGED_FORMAT_VERSION, "items": len(lengths), "frames": total, "width": width,
            "dtype": dtype, "compressor": compressor, "level": level, "rows_per_chunk": rows_per_chunk,
            "rows_per_shard": rows_per_shard, "columns": columns, **(attrs or {}),
        }
        group.attrs.update(meta)
        spool_path.unlink()
        # the group lives one level down during writing; lift it so the store is the target folder itself
        for child in (staging / "store").iterdir():
            child.rename(staging / child.name)
        (staging / "store").rmdir()
    return meta


class RaggedStore:
    """Read items of a ragged store; the Zarr group opens lazily (safe to pickle into DataLoader workers)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        group = self._open()
        self.attrs = dict(group.attrs)
        self.offsets = np.asarray(checked_read(group["offsets"], slice(None)), dtype=np.int64)
        self._frames: Any = None

    def _open(self) -> zarr.Group:
        if not self.path.is_dir():
            raise RaggedStoreError(f"{self.path}: store not found (run `dvc repro` or `dvc pull`)")
        try:
            group = zarr.open_group(self.path, mode="r", zarr_format=3)
        except Exception as exc:  # zarr raises several types for a damaged group
            raise RaggedStoreError(f"{self.path}: not a readable Zarr store: {exc}") from None
        if group.attrs.get("ragged_format_version") != RAGGED_FORMAT_VERSION:
            raise RaggedStoreError(f"{self.path}: not a ragged store of format {RAGGED_FORMAT_VERSION}")
        return group

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_frames": None}

    @property
    def frames(self) -> Any:
        if self._frames is None:
            self._frames = self._open()["frames"]
        return self._frames

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def column(self, name: str) -> list[Any]:
        return list(self.attrs["columns"].get(name, []))  # an empty store has no columns yet

    def length(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])

    def item(self, i: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames of item i (optionally frames [start, stop) of it) as float32."""
        begin, end = int(self.offsets[i]), int(self.offsets[i + 1])
        stop = end - begin if stop is None else min(stop, end - begin)
        return np.asarray(checked_read(self.frames, slice(begin + start, begin + stop)), dtype=np.float32)

    def load_all(self) -> list[np.ndarray]:
        """Every item, reading the frames array once (small stores: the default synthetic ones)."""
        return self.load_items(list(range(len(self))))

    def load_items(self, indices: list[int]) -> list[np.ndarray]:
        """Items `indices` in the order given, reading each run of consecutive items in one slice.

        Why: a works train store holds speed copies and training-only works that evaluation and
        indexing skip; reading only what is used is most of those stages' I/O.
        """
        out: list[np.ndarray] = []
        runs = np.split(np.asarray(indices, dtype=np.int64), np.flatnonzero(np.diff(indices) != 1) + 1) if indices else []
        for run in runs:
            base = int(self.offsets[run[0]])
            block = np.asarray(checked_read(self.frames, slice(base, int(self.offsets[run[-1] + 1]))), dtype=np.float32)
            out.extend(block[int(self.offsets[j]) - base : int(self.offsets[j + 1]) - base] for j in run)
        return out

    def summary(self) -> dict[str, Any]:
        files = [p for p in self.path.rglob("*") if p.is_file()]
        return {"items": len(self), "frames": int(self.offsets[-1]), "width": self.attrs["width"],
                "dtype": self.attrs["dtype"], "file_count": len(files),
                "bytes": int(sum(p.stat().st_size for p in files)),
                "shards": math.ceil(int(self.offsets[-1]) / max(1, self.attrs["rows_per_shard"]))}
