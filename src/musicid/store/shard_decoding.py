"""Decoding rows of sharded Zarr v3 arrays straight from the shard files (the fast path).

For arrays in exactly the layout `ShardWriter` writes (row-only chunks, `sharding_indexed` with the
index at the end, inner codecs `bytes` + optional zstd/blosc, local files), rows are read straight
from the shard files: the shard index (checksum verified) is read once and cached, adjacent chunks
are fetched with one `os.pread`, and chunks are decompressed with numcodecs. This follows the Zarr
v3 sharding spec, not zarr-python internals; any other layout goes through zarr's own API.

Uncompressed shards are memory-mapped instead: when a shard's index shows its chunks stored back
to back in row order from byte 0 (what zarr writes for an uncompressed shard), the shard file *is*
a C-order array of chunks, so a row read is a page-cache copy, as fast as a memory-mapped .npy.

Every chunk carries zarr's `crc32c` codec (4 bytes after its payload; older stores without it are
still read). Decoded chunks are checked on each read; a memory-mapped chunk is checked the first
time a reader touches it (stores never change once in place), so a flipped bit in raw samples is
refused with the file and chunk named instead of being trained on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import google_crc32c
import numcodecs.blosc
import numcodecs.zstd
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation
from zarr.storage import LocalStore


from musicid.store.group import StoreError

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
    checksummed = bool(inner) and isinstance(inner[-1], Crc32cCodec)
    if checksummed:
        inner = inner[:-1]
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
        "checksummed": checksummed,
        "fill_value": array.fill_value,
        "encode_key": meta.encode_chunk_key,
        "ndim": len(shape),
    }


def _checksum_error(name: str, chunk: int) -> StoreError:
    return StoreError(f"{name}: chunk {chunk} checksum mismatch (corrupt store?)")


def checked_read(array: zarr.Array, selection: Any, *, orthogonal: bool = False) -> np.ndarray:
    """`array[selection]` (or `array.oindex[...]`) through zarr's own codecs, with its crc32c failure
    (a bare ValueError) turned into a StoreError that names the array on disk, as the direct path does."""
    try:
        return array.oindex[selection] if orthogonal else array[selection]
    except ValueError as exc:
        if "checksum" not in str(exc):
            raise
        root = getattr(array.store, "root", None)
        where = Path(root) / array.path if root is not None else array.path
        raise StoreError(f"{where}: chunk checksum mismatch (corrupt store?)") from None


class _MappedShard:
    """An uncompressed shard file as a (chunks, rows_per_chunk, ...) memmap; `chunk(c)` checks
    chunk c's crc32c the first time it is asked for, then hands out read-only views."""

    def __init__(self, handle: Any, layout: dict[str, Any], count: int) -> None:
        shape = (count, *layout["chunk_shape"])
        self.name = handle.name
        self.rows = count * layout["rows_per_chunk"]
        self._crc: np.ndarray | None = None
        if layout["checksummed"]:
            record = np.dtype([("data", layout["dtype"], layout["chunk_shape"]), ("crc", "<u4")])
            mapped = np.memmap(handle, dtype=record, mode="r", shape=(count,))
            self._chunks, self._crc = mapped["data"], mapped["crc"]
        else:
            self._chunks = np.memmap(handle, dtype=layout["dtype"], mode="r", shape=shape)
        self._verified = np.zeros(count, dtype=bool)

    def chunk(self, c: int) -> np.ndarray:
        data = self._chunks[c]
        if self._crc is not None and not self._verified[c]:
            if google_crc32c.value(data) != int(self._crc[c]):
                raise _checksum_error(self.name, c)
            self._verified[c] = True
        return data


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
        self._views: dict[int, _MappedShard | None] = {}  # uncompressed shards, memory-mapped
        self._last_chunk: tuple[tuple[int, int], np.ndarray] | None = None  # read_row's last decoded chunk

    @property
    def direct(self) -> bool:
        return self.layout is not None

    @property
    def mapped(self) -> bool:
        """Whether rows come from memory-mapped shard files (uncompressed, chunks in row order)."""
        return self.layout is not None and self.layout["decompress"] is None

    def close(self) -> None:
        self._views.clear()
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def read_row(self, i: int) -> np.ndarray:
        """One row (shape[1:]): the per-item path of a map-style Dataset, kept free of batch bookkeeping.

        From a memory-mapped shard this is a read-only view into the page cache; copy it to keep it.
        """
        if self.layout is None:
            return self.read(slice(i, i + 1))[0]
        rpc, cps = self.layout["rows_per_chunk"], self.layout["chunks_per_shard"]
        shard, chunk = divmod(i // rpc, cps)
        if self.mapped:
            view = self._shard_view(shard)
            if view is not None and i % (rpc * cps) < view.rows:
                return view.chunk(chunk)[i % rpc]  # a read-only view: callers decode (copy) it
        if self._last_chunk is not None and self._last_chunk[0] == (shard, chunk):
            return self._last_chunk[1][i % rpc]
        index = self._shard_index(shard)
        offset, length = (MISSING, MISSING) if index is None else index[chunk]
        if offset == MISSING:
            return np.full(self.shape[1:], self.layout["fill_value"], dtype=self.dtype)
        handle = self._files[shard]
        data = os.pread(handle.fileno(), int(length), int(offset))
        if len(data) != int(length):
            raise StoreError(f"{handle.name}: shard file truncated")
        decoded = self._decode_chunk(data, handle.name, chunk)
        self._last_chunk = ((shard, chunk), decoded)  # the next row is often in the same chunk
        return decoded[i % rpc]

    def read(self, selection: slice | np.ndarray) -> np.ndarray:
        """`selection` is a step-1 slice or sorted unique row indices (as made by `_row_plan`)."""
        if self.layout is None:
            if isinstance(selection, slice):
                return checked_read(self.array, selection)
            return checked_read(self.array, (selection,) + (slice(None),) * (self.array.ndim - 1), orthogonal=True)
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

    def _shard_view(self, shard: int) -> _MappedShard | None:
        """The shard file memory-mapped, when its chunks lie back to back in row order."""
        if shard in self._views:
            return self._views[shard]
        view = None
        index = self._shard_index(shard)
        if index is not None:
            chunk_bytes = self.layout["chunk_size"] * self.layout["dtype"].itemsize
            chunk_bytes += 4 if self.layout["checksummed"] else 0
            stored = index[:, 0] != MISSING
            count = int(np.argmin(stored)) if not stored.all() else len(stored)  # leading stored chunks
            expected = np.arange(count, dtype=np.uint64) * np.uint64(chunk_bytes)
            if (
                count
                and not stored[count:].any()
                and np.array_equal(index[:count, 0], expected)
                and np.all(index[:count, 1] == chunk_bytes)
            ):
                view = _MappedShard(self._files[shard], self.layout, count)
        self._views[shard] = view
        return view

    def _decode_chunk(self, data: Any, name: str, chunk: int) -> np.ndarray:
        if self.layout["checksummed"]:
            if len(data) < 4 or np.uint32(google_crc32c.value(bytes(data[:-4]))).tobytes() != bytes(data[-4:]):
                raise _checksum_error(name, chunk)
            data = data[:-4]
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
        rps = rpc * cps
        for shard, members in by_shard.items():
            view = self._shard_view(shard) if self.mapped else None
            if view is not None and int(rows[bounds[members[-1] + 1] - 1]) - shard * rps < view.rows:
                for j in members:
                    self._copy_rows(out, rows, bounds[j], bounds[j + 1], view.chunk(chunk_ids[j] % cps),
                                    chunk_ids[j] * rpc)
                continue
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
                    chunk = self._decode_chunk(buf[offset - start : offset - start + length], handle.name,
                                               chunk_ids[j] % cps)
                    self._copy_rows(out, rows, bounds[j], bounds[j + 1], chunk, chunk_ids[j] * rpc)
                k = m
        return out

    @staticmethod
    def _copy_rows(out: np.ndarray, rows: np.ndarray, lo: int, hi: int, chunk: np.ndarray, first: int) -> None:
        """out[lo:hi] = the rows rows[lo:hi] of a chunk whose first row is `first` (one slice when contiguous)."""
        start = int(rows[lo]) - first
        if int(rows[hi - 1]) - int(rows[lo]) == hi - lo - 1:
            out[lo:hi] = chunk[start : start + hi - lo]
        else:
            out[lo:hi] = chunk[rows[lo:hi] - first]


def _read_rows(reader: RowReader, plan: tuple[Any, np.ndarray | None, int]) -> np.ndarray:
    selection, inverse, _ = plan
    data = reader.read(selection)
    return data if inverse is None else data[inverse]


