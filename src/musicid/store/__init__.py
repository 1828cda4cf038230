r"""Sharded Zarr v3 stores of fixed-length audio windows: one store per split.

The `shards` stage writes ``data/shards/<split>.zarr`` (train, val, test) with `ShardWriter`;
training reads random windows through `WindowDataset`.

Layout (format_version 1)::

    <split>.zarr/               zarr v3 group; attrs:
                                  format_version, sample_rate, window_samples, hop_samples,
                                  dtype (float16|float32|int16), compressor, level, rows,
                                  rows_per_chunk, rows_per_shard, targets (names),
                                  track_ids (list; index i <-> targets/track_index == i),
                                  work_ids (list; index i <-> targets/work_index == i),
                                  plus any extra attrs given to the writer
      waveform                  (rows, window_samples) in `dtype`; int16 holds PCM scaled by 32767
      targets/track_index       (rows,) int32     \  row provenance of windows cut from catalog tracks
      targets/work_index        (rows,) int32      | (required by default; a generated set such as
      targets/start_s           (rows,) float32   /  the pitch family's writes required=() and has none)
      targets/<other>           any other per-row target, first axis = rows
                                (e.g. per-bin pitch confidences (rows, bins), note lists (rows, notes, fields))

Chunking is along rows only. ``rows_per_chunk = max(1, round(chunk_mb MiB / row_bytes))`` rows of
waveform form a chunk (the unit of compression and of reading); ``rows_per_shard`` is a multiple
of it close to ``shard_mb`` MiB, and each shard is one file (zarr's ``sharding_indexed`` codec: the
chunks of a shard are concatenated, followed by an index of their byte ranges). So a store has one
file per shard per array plus a few ``zarr.json`` files, not one file per chunk. Target arrays use
the same rows_per_shard (shard k of every array holds the same rows); small targets have one chunk
per shard, large ones chunks of ``target_chunk_kb``. Compressors (applied to each chunk inside a
shard): none, zstd (``ZstdCodec(level)``) or blosc (``BloscCodec(cname="zstd", clevel=level,
shuffle="bitshuffle")``); targets may use their own (``target_compressor``). Uncompressed arrays
are read through memory maps of the shard files (`musicid.store.shard_decoding`).

A store is built in a temporary sibling directory and renamed into place only after a clean close,
and readers refuse a directory without the ``format_version`` attribute.
"""

from typing import Any

from musicid.store.group import StoreError, StoreNotFoundError, open_store
from musicid.store.reader import read_targets, read_windows, store_summary
from musicid.store.writer import FORMAT_VERSION, ShardWriter, row_layout

__all__ = [
    "FORMAT_VERSION",
    "ShardWriter",
    "StoreError",
    "StoreNotFoundError",
    "WindowDataset",
    "open_store",
    "read_targets",
    "read_windows",
    "row_layout",
    "store_summary",
]


def __getattr__(name: str) -> Any:
    """WindowDataset on first use: it imports torch (~2 s), which `musicid store info` never needs."""
    if name == "WindowDataset":
        from musicid.store.dataset import WindowDataset

        return WindowDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
