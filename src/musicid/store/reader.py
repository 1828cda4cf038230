"""Read windows and targets back from a musicid Zarr v3 store, directly or as a torch Dataset.

Random row reads are the slow case for Zarr: every row costs a whole chunk (~chunk_mb) of
decompression, and zarr-python 3.1.6 adds ~2 ms of asyncio/thread overhead per call and ~1 ms per
chunk inside a shard (it fetches the chunks of a shard one after another). Two things help:

* batches: `read_windows`, `read_targets`, `WindowDataset.read_batch` and `__getitems__` (used by a
  DataLoader with a batch size) sort the requested rows and read them in one request, so each chunk
  is fetched and decoded once per batch;
* the direct shard path (`fast=True`, the default): for arrays in exactly the layout
  `ShardWriter` writes (row-only chunks, `sharding_indexed` with the index at the end, inner codecs
  `bytes` + optional zstd/blosc, local files), rows are read straight from the shard files: the
  shard index (checksum verified) is read once and cached, adjacent chunks are fetched with one
  `os.pread`, and chunks are decompressed with numcodecs. This follows the Zarr v3 sharding spec,
  not zarr-python internals; any other layout, or `fast=False`, goes through zarr's own API.

`benchmarks/shard_read.py` measures both paths against .npy and .npz.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import google_crc32c
import numcodecs.blosc
import numcodecs.zstd
import numpy as np
import torch
import zarr
from torch.utils.data import Dataset
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation
from zarr.storage import LocalStore

from musicid.device import resolve_device
from musicid.errors import MusicidError
from musicid.store.writer import FORMAT_VERSION, TARGETS, WAVEFORM, decode_windows

DEFAULT_TARGETS = ("track_index", "work_index", "start_s")
# Targets up to this size are read whole, once per process, instead of row by row.
SMALL_TARGET_BYTES = 16 * 1024 * 1024


class StoreError(MusicidError, ValueError):
    """A path is not a readable musicid store, or a request does not fit the store."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No store at the given path."""


def open_store(path: str | Path) -> zarr.Group:
    """Open a store read-only after checking that it is a complete musicid store of this format."""
    path = Path(path)
    if not path.exists():
        raise StoreNotFoundError(f"{path}: no shard store here (run the shards stage first)")
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: not a Zarr v3 store (no zarr.json)")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a broken or non-group store
        raise StoreError(f"{path}: not a readable Zarr v3 group ({type(exc).__name__}: {exc})") from None
    version = group.attrs.get("format_version")
    if version is None:
        raise StoreError(f"{path}: not a musicid shard store (no format_version attribute)")
    if version != FORMAT_VERSION:
        raise StoreError(
            f"{path}: store format_version {version} is not supported (expected {FORMAT_VERSION}); "
            "rebuild it with the shards stage"
        )
    members = set(group.array_keys())
    if WAVEFORM not in members or TARGETS not in set(group.group_keys()):
        raise StoreError(f"{path}: incomplete store (missing {WAVEFORM} or {TARGETS}/)")
    return group


def _as_group(store: str | Path | zarr.Group) -> zarr.Group:
    return store if isinstance(store, zarr.Group) else open_store(store)


def _row_plan(rows: Any, n: int) -> tuple[Any, np.ndarray | None, int]:
    """Turn a row request into (selection for zarr, inverse permutation or None, count).

    Integer lists are de-duplicated and sorted (one orthogonal read), and a contiguous run becomes
    a slice; the inverse permutation restores the caller's order and duplicates.
    """
    if isinstance(rows, slice):
        start, stop, step = rows.indices(n)
        if step == 1:
            return slice(start, max(start, stop)), None, max(0, stop - start)
        rows = np.arange(start, stop, step)
    idx = np.asarray(rows)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise StoreError(f"rows: boolean mask must have shape ({n},), got {idx.shape}")
        idx = np.flatnonzero(idx)
    if idx.ndim == 0:
        idx = idx.reshape(1)
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise StoreError(f"rows: expected an int, a slice or a 1-D sequence of ints, got {rows!r:.80}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise StoreError(f"rows: index out of range for a store of {n} rows")
    idx = np.where(idx < 0, idx + n, idx)
    if idx.size == 0:
        return slice(0, 0), None, 0
    unique, inverse = np.unique(idx, return_inverse=True)
    identity = len(unique) == len(idx) and np.array_equal(unique, idx)
    if unique[-1] - unique[0] + 1 == len(unique):
        selection: Any = slice(int(unique[0]), int(unique[-1]) + 1)
    else:
        selection = unique
    return selection, (None if identity else inverse), len(idx)


MISSING = np.uint64(2**64 - 1)  # shard index entry of a chunk that was never written


def _direct_layout(array: zarr.Array) -> dict[str, Any] | None:
    """What the direct shard path needs, or None when the array is not in the layout it handles."""
    meta = array.metadata
    if getattr(meta, "zarr_format", None) != 3 or not isinstance(array.store, LocalStore):
        return None
    if len(meta.codecs) != 1 or not isinstance(meta.codecs[0], ShardingCodec):
        return None
    sharding = meta.codecs[0]
    index_codecs = tuple(sharding.index_codecs)
    if (
        sharding.index_location != ShardingCodecIndexLocation.end
        or len(index_codecs) != 2
        or not isinstance(index_codecs[0], BytesCodec)
        or getattr(index_codecs[0].endian, "value", None) != "little"
        or not isinstance(index_codecs[1], Crc32cCodec)
    ):
        return None
    inner = tuple(sharding.codecs)
    dtype = np.dtype(array.dtype)
    if not inner or not isinstance(inner[0], BytesCodec) or len(inner) > 2:
        return None
    if dtype.itemsize > 1 and getattr(inner[0].endian, "value", None) != "little":
        return None
    decompress: Callable[[Any], Any] | None = None
    if len(inner) == 2:
        if isinstance(inner[1], ZstdCodec):
            decompress = numcodecs.zstd.decompress
        elif isinstance(inner[1], BloscCodec):
            decompress = numcodecs.blosc.decompress
        else:
            return None
    shape, chunk, shard = tuple(array.shape), tuple(sharding.chunk_shape), tuple(array.shards or ())
    if (
        len(shape) < 1
        or len(chunk) != len(shape)
        or len(shard) != len(shape)
        or chunk[1:] != shape[1:]
        or shard[1:] != shape[1:]
        or shard[0] % chunk[0]
        or array.order != "C"
    ):
        return None
    return {
        "root": Path(str(array.store.root)) / array.path,
        "dtype": dtype.newbyteorder("<"),
        "chunk_shape": chunk,
        "chunk_size": int(np.prod(chunk)),
        "rows_per_chunk": chunk[0],
        "chunks_per_shard": shard[0] // chunk[0],
        "decompress": decompress,
        "fill_value": array.fill_value,
        "encode_key": meta.encode_chunk_key,
        "ndim": len(shape),
    }


class RowReader:
    """Reads rows (first-axis slices) of one array of a store; see the module docstring.

    Holds open file handles and cached shard indexes, so keep one per process (WindowDataset does).
    Shard files never change once a store is in place (stores are written atomically, never
    updated), which is what makes caching the indexes safe.
    """

    def __init__(self, array: zarr.Array, *, fast: bool = True) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.layout = _direct_layout(array) if fast else None
        self._indexes: dict[int, np.ndarray | None] = {}
        self._files: dict[int, Any] = {}

    @property
    def direct(self) -> bool:
        return self.layout is not None

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def read(self, selection: slice | np.ndarray) -> np.ndarray:
        """`selection` is a step-1 slice or sorted unique row indices (as made by `_row_plan`)."""
        if self.layout is None:
            if isinstance(selection, slice):
                return self.array[selection]
            return self.array.get_orthogonal_selection((selection,) + (slice(None),) * (self.array.ndim - 1))
        return self._read_direct(selection)

    # ---------------------------------------------------------------------------------------- direct
    def _shard_file(self, shard: int) -> Any:
        handle = self._files.get(shard)
        if handle is None:
            key = self.layout["encode_key"]((shard,) + (0,) * (self.layout["ndim"] - 1))
            try:
                handle = open(self.layout["root"] / key, "rb")  # noqa: SIM115 - cached, closed in close()
            except FileNotFoundError:
                return None  # a shard whose chunks are all fill value is not written
            self._files[shard] = handle
        return handle

    def _shard_index(self, shard: int) -> np.ndarray | None:
        if shard in self._indexes:
            return self._indexes[shard]
        handle = self._shard_file(shard)
        index = None
        if handle is not None:
            n = self.layout["chunks_per_shard"]
            size = os.fstat(handle.fileno()).st_size
            nbytes = 16 * n + 4
            if size < nbytes:
                raise StoreError(f"{handle.name}: shard file too short for its index ({size} bytes)")
            raw = os.pread(handle.fileno(), nbytes, size - nbytes)
            if np.uint32(google_crc32c.value(raw[:-4])).tobytes() != raw[-4:]:
                raise StoreError(f"{handle.name}: shard index checksum mismatch (corrupt store?)")
            index = np.frombuffer(raw[:-4], dtype="<u8").reshape(n, 2)
        self._indexes[shard] = index
        return index

    def _decode_chunk(self, data: Any) -> np.ndarray:
        decompress = self.layout["decompress"]
        raw = decompress(data) if decompress is not None else data
        chunk = np.frombuffer(raw, dtype=self.layout["dtype"])
        expected = self.layout["chunk_size"]
        if chunk.size != expected:
            raise StoreError(f"{self.layout['root']}: chunk decodes to {chunk.size} values, expected {expected}")
        return chunk.reshape(self.layout["chunk_shape"])

    def _read_direct(self, selection: slice | np.ndarray) -> np.ndarray:
        if isinstance(selection, slice):
            rows = np.arange(selection.start, selection.stop, dtype=np.int64)
        else:
            rows = np.asarray(selection, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        if not len(rows):
            return out
        rpc, cps = self.layout["rows_per_chunk"], self.layout["chunks_per_shard"]
        chunks, first = np.unique(rows // rpc, return_index=True)
        bounds = np.append(first, len(rows)).tolist()
        chunk_ids = chunks.tolist()
        fill = self.layout["fill_value"]
        by_shard: dict[int, list[int]] = {}
        for j, c in enumerate(chunk_ids):
            by_shard.setdefault(c // cps, []).append(j)
        for shard, members in by_shard.items():
            index = self._shard_index(shard)
            entries = []  # (offset, length, position j in chunk_ids) of stored chunks
            for j in members:
                offset, length = (MISSING, MISSING) if index is None else index[chunk_ids[j] % cps]
                if offset == MISSING:
                    out[bounds[j] : bounds[j + 1]] = fill
                else:
                    entries.append((int(offset), int(length), j))
            if not entries:
                continue
            entries.sort()
            handle = self._files[shard]
            k = 0
            while k < len(entries):  # one pread per run of adjacent chunks
                start, end, m = entries[k][0], entries[k][0] + entries[k][1], k + 1
                while m < len(entries) and entries[m][0] == end:
                    end += entries[m][1]
                    m += 1
                buf = memoryview(os.pread(handle.fileno(), end - start, start))
                if len(buf) != end - start:
                    raise StoreError(f"{handle.name}: shard file truncated")
                for offset, length, j in entries[k:m]:
                    chunk = self._decode_chunk(buf[offset - start : offset - start + length])
                    lo, hi = bounds[j], bounds[j + 1]
                    first_row = int(rows[lo]) - chunk_ids[j] * rpc
                    if int(rows[hi - 1]) - int(rows[lo]) == hi - lo - 1:  # contiguous rows: slice
                        out[lo:hi] = chunk[first_row : first_row + hi - lo]
                    else:
                        out[lo:hi] = chunk[rows[lo:hi] - chunk_ids[j] * rpc]
                k = m
        return out


def _read_rows(reader: RowReader, plan: tuple[Any, np.ndarray | None, int]) -> np.ndarray:
    selection, inverse, _ = plan
    data = reader.read(selection)
    return data if inverse is None else data[inverse]


def read_windows(
    store: str | Path | zarr.Group, rows: Any = slice(None), *, fast: bool = True
) -> np.ndarray:
    """Rows of the waveform as float32 (n, window_samples), in the order asked (int16 scaled back).

    `rows`: an int, a slice, a boolean mask or a sequence of ints (any order, repeats allowed).
    """
    group = _as_group(store)
    reader = RowReader(group[WAVEFORM], fast=fast)
    try:
        plan = _row_plan(rows, reader.shape[0])
        return decode_windows(_read_rows(reader, plan), group.attrs["dtype"])
    finally:
        reader.close()


def read_targets(
    store: str | Path | zarr.Group,
    rows: Any = slice(None),
    names: Iterable[str] | None = None,
    *,
    fast: bool = True,
) -> dict[str, np.ndarray]:
    """Rows of the named target arrays (all of them by default), in the order asked."""
    group = _as_group(store)
    targets = group[TARGETS]
    available = sorted(targets.array_keys())
    names = available if names is None else list(names)
    plan = _row_plan(rows, group[WAVEFORM].shape[0])
    out = {}
    for name in names:
        if name not in available:
            raise StoreError(f"targets/{name}: not in this store (has {available})")
        reader = RowReader(targets[name], fast=fast)
        try:
            out[name] = _read_rows(reader, plan)
        finally:
            reader.close()
    return out


class WindowDataset(Dataset):
    """Windows of one store as a map-style torch Dataset.

    `ds[i]` is a dict: "waveform" float32 tensor (window_samples,) plus one tensor per name in
    `targets` (stored dtype: track_index/work_index int32, start_s float32). `ds[list_of_ints]` and
    `ds.read_batch(indices)` return the same dict batched (leading axis = len(indices)) from one
    read per array, so `DataLoader(ds, batch_size=B)` (via `__getitems__`) or
    `DataLoader(ds, sampler=BatchSampler(RandomSampler(ds), B, False), batch_size=None)` read each
    batch in one request instead of B.

    Lazy mode keeps only the path (and settings); each process (DataLoader workers included) opens
    its own zarr handles and shard files on first use, keyed on its pid. Small targets (<= 16 MiB,
    e.g. indices and start times) are read whole once per process. `preload=True` reads everything
    into memory once as torch tensors (float32 waveform) and moves them to `device` ("auto": cuda if
    available); a dataset preloaded onto a GPU is meant for `num_workers=0`. `fast=False` reads
    through zarr's own API instead of the direct shard path (see the module docstring).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        preload: bool = False,
        device: str | torch.device | None = None,
        targets: Sequence[str] = DEFAULT_TARGETS,
        fast: bool = True,
    ) -> None:
        self.path = str(path)
        self.targets = tuple(targets)
        self.fast = fast
        group = open_store(self.path)
        available = set(group[TARGETS].array_keys())
        unknown = [t for t in self.targets if t not in available]
        if unknown:
            raise StoreError(f"{self.path}: targets {unknown} not in this store (has {sorted(available)})")
        self.dtype: str = group.attrs["dtype"]
        self.window_samples: int = int(group.attrs["window_samples"])
        self.sample_rate: int = int(group.attrs["sample_rate"])
        self._len = int(group[WAVEFORM].shape[0])
        self.device = resolve_device(device) if device is not None else None
        self._handles: dict[int, dict[str, Any]] = {}
        self._preloaded: dict[str, torch.Tensor] | None = None
        if preload:
            data = {WAVEFORM: torch.from_numpy(read_windows(group, fast=fast))}
            for name, values in read_targets(group, names=self.targets, fast=fast).items():
                data[name] = torch.from_numpy(np.ascontiguousarray(values))
            if self.device is not None:
                data = {k: v.to(self.device) for k, v in data.items()}
            self._preloaded = data

    @property
    def preloaded(self) -> bool:
        return self._preloaded is not None

    def __len__(self) -> int:
        return self._len

    # ------------------------------------------------------------------------------- per-process state
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}  # zarr handles and open files are per process; workers open their own
        return state

    def _open(self) -> dict[str, Any]:
        pid = os.getpid()
        handles = self._handles.get(pid)
        if handles is None:
            group = open_store(self.path)
            targets: dict[str, Any] = {}
            for name in self.targets:
                array = group[TARGETS][name]
                reader = RowReader(array, fast=self.fast)
                # tiny targets (indices, start times) are read whole once: a memory lookup per row
                targets[name] = reader.read(slice(0, self._len)) if array.nbytes <= SMALL_TARGET_BYTES else reader
            handles = {WAVEFORM: RowReader(group[WAVEFORM], fast=self.fast), TARGETS: targets}
            self._handles = {pid: handles}  # drop handles inherited from a parent process
        return handles

    # ---------------------------------------------------------------------------------------- access
    def _check_index(self, i: int) -> int:
        if i < -self._len or i >= self._len:
            raise IndexError(f"index {i} out of range for {self._len} windows")
        return i + self._len if i < 0 else i

    def __getitem__(self, index: Any) -> dict[str, torch.Tensor]:
        if not isinstance(index, (int, np.integer)):
            return self.read_batch(index)
        i = self._check_index(int(index))
        if self._preloaded is not None:
            return {k: v[i] for k, v in self._preloaded.items()}
        handles = self._open()
        row = slice(i, i + 1)
        out = {WAVEFORM: torch.from_numpy(decode_windows(handles[WAVEFORM].read(row)[0], self.dtype))}
        for name, source in handles[TARGETS].items():
            value = source[i] if isinstance(source, np.ndarray) else source.read(row)[0]
            out[name] = torch.as_tensor(np.asarray(value))
        return out

    def read_batch(self, indices: Any) -> dict[str, torch.Tensor]:
        """Many rows in caller order, one read per array: {"waveform": (B, window_samples), ...}."""
        plan = _row_plan(indices, self._len)
        selection, inverse, _ = plan
        if self._preloaded is not None:
            if isinstance(selection, slice):
                sel = torch.arange(selection.start, selection.stop)
            else:
                sel = torch.from_numpy(selection)
            if inverse is not None:
                sel = sel[torch.from_numpy(inverse)]
            return {k: v[sel.to(v.device)] for k, v in self._preloaded.items()}
        handles = self._open()
        out = {WAVEFORM: torch.from_numpy(decode_windows(_read_rows(handles[WAVEFORM], plan), self.dtype))}
        for name, source in handles[TARGETS].items():
            if isinstance(source, np.ndarray):
                rows = source[selection] if inverse is None else source[selection][inverse]
            else:
                rows = _read_rows(source, plan)
            out[name] = torch.from_numpy(np.ascontiguousarray(rows))
        return out

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """DataLoader's batched fetch: one read for the batch, split into per-sample dicts."""
        batch = self.read_batch(indices)
        return [{k: v[j] for k, v in batch.items()} for j in range(len(indices))]


def store_summary(path: str | Path) -> dict[str, Any]:
    """Shape, encoding and on-disk footprint of a store (for logs, metrics and the benchmark)."""
    group = open_store(path)
    waveform = group[WAVEFORM]
    names = [type(c).__name__ for c in waveform.compressors]
    compressor = "none" if not names else ",".join(
        {"ZstdCodec": "zstd", "BloscCodec": "blosc"}.get(n, n) for n in names
    )
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    return {
        "path": str(path),
        "rows": int(waveform.shape[0]),
        "window_samples": int(group.attrs["window_samples"]),
        "sample_rate": int(group.attrs["sample_rate"]),
        "dtype": str(group.attrs["dtype"]),
        "compressor": compressor,
        "rows_per_chunk": int(waveform.chunks[0]),
        "rows_per_shard": int((waveform.shards or waveform.chunks)[0]),
        "chunks": int(waveform.nchunks),
        "targets": sorted(group[TARGETS].array_keys()),
        "tracks": len(group.attrs.get("track_ids", [])),
        "works": len(group.attrs.get("work_ids", [])),
        "file_count": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "raw_bytes": int(waveform.nbytes),
        "direct_read": RowReader(waveform).direct,
    }
