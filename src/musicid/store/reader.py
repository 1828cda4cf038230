"""Read windows and targets back from a musicid Zarr v3 store (the Dataset is `musicid.store.dataset`).

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

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import zarr

from musicid.store.group import StoreError, _as_group, open_store
from musicid.store.shard_decoding import RowReader, _read_rows, _row_plan
from musicid.store.writer import TARGETS, WAVEFORM, decode_windows

# Targets up to this size are read whole, once per process, instead of row by row.
SMALL_TARGET_BYTES = 16 * 1024 * 1024


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


def store_summary(path: str | Path) -> dict[str, Any]:
    """Shape, encoding and on-disk footprint of a store (for logs, metrics and the benchmark)."""
    group = open_store(path)
    waveform = group[WAVEFORM]
    names = [type(c).__name__ for c in waveform.compressors if type(c).__name__ != "Crc32cCodec"]
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
        "chunk_checksums": any(type(c).__name__ == "Crc32cCodec" for c in waveform.compressors),
        "direct_read": RowReader(waveform).direct,
    }

