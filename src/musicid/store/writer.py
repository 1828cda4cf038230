"""Write fixed-length windows and their per-row targets into one sharded Zarr v3 store.

See `musicid.store` for the on-disk layout. The writer buffers rows and writes whole shards only, so
every write starts on a shard boundary and no shard is ever read back and rewritten; the last,
partial shard is written at close. The store is built in a `.<name>.tmp-*` sibling and moved into
place only when the `with` block finishes cleanly (`musicid.fsutil.atomic_dir`), so an interrupted
or failed write never leaves a store at `path` that a later run would trust.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from musicid.fsutil import atomic_dir

FORMAT_VERSION = 1
MIB = 1024 * 1024
INT16_SCALE = 32767.0
WAVEFORM = "waveform"
TARGETS = "targets"
# Row provenance of windows cut from catalog tracks (fingerprint and works stores require it; a
# generated set such as the pitch family's has none), with the dtype each is stored as.
REQUIRED_TARGETS: dict[str, np.dtype] = {
    "track_index": np.dtype("int32"),
    "work_index": np.dtype("int32"),
    "start_s": np.dtype("float32"),
}
# Group attributes the writer owns; extra attrs may not override them.
RESERVED_ATTRS = frozenset(
    {
        "format_version",
        "sample_rate",
        "window_samples",
        "hop_samples",
        "dtype",
        "compressor",
        "target_compressor",
        "level",
        "rows",
        "rows_per_chunk",
        "rows_per_shard",
        "track_ids",
        "work_ids",
        "targets",
    }
)


class StoreSpec(Protocol):
    """What the writer needs to know: window shape and rate plus the encoding (config.StoreEncodingConfig)."""

    sample_rate: int
    dtype: str
    compressor: str
    level: int
    chunk_mb: float
    shard_mb: float

    @property
    def window_samples(self) -> int: ...

    @property
    def hop_samples(self) -> int: ...

    @property
    def targets_codec(self) -> str: ...


@dataclass(frozen=True)
class RowLayout:
    """How rows are grouped: chunks (the unit of compression and of a read) inside shards (files)."""

    row_bytes: int
    rows_per_chunk: int
    rows_per_shard: int


def row_layout(cfg: StoreSpec) -> RowLayout:
    """rows_per_chunk ~ chunk_mb MiB of waveform, rows_per_shard a multiple of it ~ shard_mb MiB."""
    row_bytes = cfg.window_samples * np.dtype(cfg.dtype).itemsize
    rows_per_chunk = max(1, round(cfg.chunk_mb * MIB / row_bytes))
    chunks_per_shard = max(1, round(cfg.shard_mb * MIB / (rows_per_chunk * row_bytes)))
    return RowLayout(row_bytes, rows_per_chunk, rows_per_chunk * chunks_per_shard)


def target_chunk_rows(row_bytes: int, rows_per_shard: int, chunk_mb: float) -> int:
    """Rows per chunk for a target array: the largest divisor of rows_per_shard within ~chunk_mb.

    Small per-row targets (indices, start times) get one chunk per shard; big ones (e.g. per-frame
    pitch confidences) are split so a single-row read does not decompress a whole shard.
    """
    limit = max(1, int(chunk_mb * MIB // max(1, row_bytes)))
    if limit >= rows_per_shard:
        return rows_per_shard
    return max(d for d in range(1, limit + 1) if rows_per_shard % d == 0)


def make_compressors(name: str, level: int) -> tuple[Any, ...]:
    """The zarr v3 bytes-to-bytes codecs for a `shards.compressor` setting, then a crc32c per chunk
    (the shard index has its own; this one covers the payload, compressed or not)."""
    if name == "none":
        return (Crc32cCodec(),)
    if name == "zstd":
        return (ZstdCodec(level=level), Crc32cCodec())
    if name == "blosc":
        # typesize is left unset so zarr fills in each array's item size; bitshuffle as asked for.
        return (BloscCodec(cname="zstd", clevel=level, shuffle="bitshuffle"), Crc32cCodec())
    raise ValueError(f"compressor: unknown value {name!r}; allowed: none, zstd, blosc")


def encode_windows(windows: np.ndarray, dtype: str) -> np.ndarray:
    """float [-1, 1] -> stored dtype. int16 is PCM scaled by 32767 with clipping."""
    if dtype == "int16":
        scaled = np.clip(windows, -1.0, 1.0, dtype=np.float32) * np.float32(INT16_SCALE)
        return np.rint(scaled).astype(np.int16)
    return windows.astype(dtype, copy=False)


def decode_windows(stored: np.ndarray, dtype: str) -> np.ndarray:
    """Stored dtype -> float32 (the inverse of `encode_windows` up to quantisation)."""
    if dtype == "int16":
        out = stored.astype(np.float32)
        out *= np.float32(1.0 / INT16_SCALE)
        return out
    return stored.astype(np.float32, copy=False)


class ShardWriter(AbstractContextManager["ShardWriter"]):
    """Append windows + targets to a new store at `path`; the store appears only on clean close.

    Usage::

        with ShardWriter(path, cfg=params.fingerprint.shards, track_ids=tids, work_ids=wids) as writer:
            writer.add(windows, {"track_index": ti, "work_index": wi, "start_s": starts})

    `windows` is (n, window_samples) float in [-1, 1]; `targets` maps a name to an array whose first
    axis has n rows and must hold the `required` names (by default track_index, work_index and
    start_s, which index `track_ids` / `work_ids`), plus any other per-row target (the same keys,
    trailing shapes and dtypes on every call). A generated set with no source tracks passes
    `required=()`. Rows are buffered and written a whole shard at a time. Targets are encoded with
    `cfg.targets_codec`, so the waveform can stay uncompressed (memory-mappable) while targets are
    compressed. An exception inside the `with` (or `abort()`) leaves nothing at `path`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        cfg: StoreSpec,
        track_ids: list[str] | tuple[str, ...] = (),
        work_ids: list[str] | tuple[str, ...] = (),
        attrs: dict[str, Any] | None = None,
        required: tuple[str, ...] | list[str] = tuple(REQUIRED_TARGETS),
    ) -> None:
        self.path = Path(path)
        self.cfg = cfg
        unknown = [name for name in required if name not in REQUIRED_TARGETS]
        if unknown:
            raise ValueError(f"required: unknown provenance targets {unknown}; allowed: {', '.join(REQUIRED_TARGETS)}")
        self.required = tuple(required)
        self.track_ids = [str(t) for t in track_ids]
        self.work_ids = [str(w) for w in work_ids]
        self.extra_attrs = dict(attrs or {})
        clash = sorted(RESERVED_ATTRS & self.extra_attrs.keys())
        if clash:
            raise ValueError(f"attrs: keys {clash} are reserved for the store layout")
        self.layout = row_layout(cfg)
        self.window_samples = cfg.window_samples
        self.rows = 0  # rows accepted by add()
        self._written = 0  # rows already flushed to zarr (always a multiple of rows_per_shard until close)
        self._buffer: dict[str, list[np.ndarray]] = {}
        self._buffered = 0
        self._target_specs: dict[str, tuple[np.dtype, tuple[int, ...]]] | None = None
        self._arrays: dict[str, zarr.Array] = {}
        self._closed = False

        self._atomic = atomic_dir(self.path)
        self._tmp = self._atomic.__enter__()
        try:
            self._group = zarr.open_group(str(self._tmp), mode="w", zarr_format=3)
            self._group.require_group(TARGETS)  # present even when a store has no targets
            self._arrays[WAVEFORM] = self._create(
                WAVEFORM, cfg.dtype, (self.window_samples,), self.layout.rows_per_chunk
            )
        except BaseException as exc:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise

    # ----------------------------------------------------------------------------------------- arrays
    def _create(
        self, name: str, dtype: Any, trailing: tuple[int, ...], chunk_rows: int, codec: str | None = None
    ) -> zarr.Array:
        shape = (0, *trailing)
        return self._group.create_array(
            name,
            shape=shape,
            dtype=dtype,
            chunks=(chunk_rows, *trailing),
            shards=(self.layout.rows_per_shard, *trailing),
            compressors=make_compressors(codec or self.cfg.compressor, self.cfg.level),
            fill_value=0,
        )

    def _create_target(self, name: str, dtype: np.dtype, trailing: tuple[int, ...]) -> zarr.Array:
        row_bytes = dtype.itemsize * math.prod(trailing)
        kb = getattr(self.cfg, "target_chunk_kb", None)
        chunk_rows = target_chunk_rows(row_bytes, self.layout.rows_per_shard, self.cfg.chunk_mb if kb is None else kb / 1024)
        return self._create(f"{TARGETS}/{name}", dtype, trailing, chunk_rows, self.cfg.targets_codec)

    # -------------------------------------------------------------------------------------- validate
    def _check_targets(self, n: int, targets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not isinstance(targets, dict):
            raise ValueError(f"targets: expected a dict of arrays, got {type(targets).__name__}")
        missing = [k for k in self.required if k not in targets]
        if missing:
            raise ValueError(f"targets: missing required arrays {missing}")
        out: dict[str, np.ndarray] = {}
        for name, value in targets.items():
            if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
                raise ValueError(f"targets: invalid array name {name!r}")
            arr = np.asarray(value)
            if arr.ndim == 0 or arr.shape[0] != n:
                raise ValueError(f"targets/{name}: expected {n} rows (first axis), got shape {arr.shape}")
            if name in REQUIRED_TARGETS:
                want = REQUIRED_TARGETS[name]
                if arr.ndim != 1:
                    raise ValueError(f"targets/{name}: expected shape ({n},), got {arr.shape}")
                if want.kind == "i" and arr.dtype.kind not in "iu":
                    raise ValueError(f"targets/{name}: expected integers, got dtype {arr.dtype}")
                if want.kind == "f" and arr.dtype.kind not in "iuf":
                    raise ValueError(f"targets/{name}: expected numbers, got dtype {arr.dtype}")
                arr = arr.astype(want, copy=False)
            elif arr.dtype.kind not in "biuf":
                raise ValueError(f"targets/{name}: expected a numeric/bool array, got dtype {arr.dtype}")
            out[name] = arr
        for name, ids in (("track_index", self.track_ids), ("work_index", self.work_ids)):
            col = out.get(name)
            if col is not None and n and (col.min() < 0 or col.max() >= len(ids)):
                raise ValueError(
                    f"targets/{name}: values must lie in [0, {len(ids)}) to index the {len(ids)} ids, "
                    f"got range [{col.min()}, {col.max()}]"
                )
        if "start_s" in out and n and not np.all(np.isfinite(out["start_s"])):
            raise ValueError("targets/start_s: contains NaN or infinity")

        specs = {name: (arr.dtype, arr.shape[1:]) for name, arr in out.items()}
        if self._target_specs is None:
            self._target_specs = specs
            for name, (dtype, trailing) in specs.items():
                self._arrays[f"{TARGETS}/{name}"] = self._create_target(name, dtype, trailing)
            return out
        if specs.keys() != self._target_specs.keys():
            raise ValueError(
                f"targets: keys {sorted(specs)} differ from the first call's {sorted(self._target_specs)}"
            )
        for name, (dtype, trailing) in self._target_specs.items():
            if specs[name][1] != trailing:
                raise ValueError(
                    f"targets/{name}: trailing shape {specs[name][1]} differs from the first call's {trailing}"
                )
            if specs[name][0] != dtype:
                if not np.can_cast(specs[name][0], dtype, casting="same_kind"):
                    raise ValueError(
                        f"targets/{name}: dtype {specs[name][0]} cannot be stored as the first call's {dtype}"
                    )
                out[name] = out[name].astype(dtype)
        return out

    def _check_windows(self, windows: np.ndarray) -> np.ndarray:
        arr = np.asarray(windows)
        if arr.ndim != 2 or arr.shape[1] != self.window_samples:
            raise ValueError(
                f"waveform: expected shape (n, {self.window_samples}), got {arr.shape}"
            )
        if arr.dtype.kind != "f":
            raise ValueError(f"waveform: expected float samples in [-1, 1], got dtype {arr.dtype}")
        if arr.size and not np.all(np.isfinite(arr)):
            raise ValueError("waveform: contains NaN or infinity")
        return arr

    # ------------------------------------------------------------------------------------------ write
    def add(self, windows: np.ndarray, targets: dict[str, np.ndarray]) -> None:
        """Buffer n windows and their targets; whole shards are written as soon as they fill."""
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        arr = self._check_windows(windows)
        checked = self._check_targets(arr.shape[0], targets)
        n = arr.shape[0]
        if n == 0:
            return
        self._buffer.setdefault(WAVEFORM, []).append(encode_windows(arr, self.cfg.dtype))
        for name, value in checked.items():
            self._buffer.setdefault(f"{TARGETS}/{name}", []).append(value)
        self._buffered += n
        self.rows += n
        if self._buffered >= self.layout.rows_per_shard:
            self._flush(final=False)

    def _flush(self, *, final: bool) -> None:
        per_shard = self.layout.rows_per_shard
        count = self._buffered if final else (self._buffered // per_shard) * per_shard
        if count == 0:
            return
        start, stop = self._written, self._written + count
        for key, parts in self._buffer.items():
            data = parts[0] if len(parts) == 1 else np.concatenate(parts)
            head, rest = data[:count], data[count:]
            array = self._arrays[key]
            array.resize((stop, *array.shape[1:]))
            array[start:stop] = head
            self._buffer[key] = [rest] if len(rest) else []
        self._written = stop
        self._buffered -= count

    def close(self) -> None:
        """Write the last partial shard and the attrs, then move the store into place."""
        if self._closed:
            return
        try:
            if self._target_specs is None:  # no add() at all: an empty but valid store
                specs = {name: (REQUIRED_TARGETS[name], ()) for name in self.required}
                for name, (dtype, trailing) in specs.items():
                    self._arrays[f"{TARGETS}/{name}"] = self._create_target(name, dtype, trailing)
                self._target_specs = specs
            self._flush(final=True)
            self._group.attrs.update(
                {
                    **self.extra_attrs,
                    "format_version": FORMAT_VERSION,
                    "sample_rate": self.cfg.sample_rate,
                    "window_samples": self.window_samples,
                    "hop_samples": self.cfg.hop_samples,
                    "dtype": self.cfg.dtype,
                    "compressor": self.cfg.compressor,
                    "target_compressor": self.cfg.targets_codec,
                    "level": self.cfg.level,
                    "rows": self.rows,
                    "rows_per_chunk": self.layout.rows_per_chunk,
                    "rows_per_shard": self.layout.rows_per_shard,
                    "track_ids": self.track_ids,
                    "work_ids": self.work_ids,
                    "targets": sorted(self._target_specs),
                }
            )
        except BaseException as exc:
            self._abort(exc)
            raise
        self._closed = True
        self._buffer.clear()
        self._atomic.__exit__(None, None, None)

    def _abort(self, exc: BaseException) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        self._atomic.__exit__(type(exc), exc, exc.__traceback__)  # removes the temp dir

    def abort(self) -> None:
        """Discard everything written so far; nothing appears at `path`."""
        exc = RuntimeError(f"{self.path}: write aborted")
        self._abort(exc)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            self._abort(exc)
        return None
