"""Zarr shard store: round trips, sharding, atomic writes, readers and the torch Dataset."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DataLoader

from musicid.config import ShardsConfig
from musicid.store import (
    ShardWriter,
    StoreError,
    StoreNotFoundError,
    WindowDataset,
    open_store,
    read_targets,
    read_windows,
    row_layout,
    store_summary,
)
from musicid.store.shard_decoding import RowReader

# 400-sample windows; float16 rows are 800 B -> 13 rows per chunk, 52 rows per shard.
SMALL = dict(sample_rate=8000, window_s=0.05, hop_s=0.025, chunk_mb=0.01, shard_mb=0.04)
TRACKS = [f"t{i}" for i in range(7)]
WORKS = [f"w{i}" for i in range(3)]


def make_rows(n: int, window: int, seed: int = 0, frames: int = 0) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    windows = rng.uniform(-1, 1, size=(n, window)).astype(np.float32)
    targets = {
        "track_index": rng.integers(0, len(TRACKS), n),
        "work_index": rng.integers(0, len(WORKS), n),
        "start_s": (np.arange(n) * 0.025).astype(np.float64),
    }
    if frames:
        targets["pitch"] = rng.random((n, frames, 4)).astype(np.float32)
    return windows, targets


def write_store(path: Path, cfg: ShardsConfig, windows: np.ndarray, targets: dict, pieces=(1, 37, 80)):
    """Add rows in uneven pieces so buffered rows straddle shard boundaries."""
    with ShardWriter(path, cfg=cfg, track_ids=TRACKS, work_ids=WORKS, attrs={"split": "train"}) as w:
        start, k = 0, 0
        while start < len(windows):
            stop = min(len(windows), start + pieces[k % len(pieces)])
            w.add(windows[start:stop], {name: v[start:stop] for name, v in targets.items()})
            start, k = stop, k + 1
    return path


def store_files(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


TOLERANCE = {"float32": 0.0, "float16": 2.5e-4, "int16": 0.5 / 32767 + 1e-7}


@pytest.mark.parametrize("compressor", ["none", "zstd", "blosc"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "int16"])
def test_round_trip_every_dtype_and_compressor(tmp_path, dtype, compressor):
    cfg = ShardsConfig(**SMALL, dtype=dtype, compressor=compressor, level=3)
    layout = row_layout(cfg)
    n = 3 * layout.rows_per_shard + 5  # several whole shards and a partial last one
    windows, targets = make_rows(n, cfg.window_samples, seed=1)
    path = write_store(tmp_path / "train.zarr", cfg, windows, targets)

    back = read_windows(path)
    assert back.dtype == np.float32 and back.shape == windows.shape
    if dtype == "float32":
        np.testing.assert_array_equal(back, windows)
    else:
        np.testing.assert_allclose(back, windows, rtol=0, atol=TOLERANCE[dtype])

    group = open_store(path)
    wave = group["waveform"]
    assert wave.dtype == np.dtype(dtype)
    assert wave.chunks == (layout.rows_per_chunk, cfg.window_samples)
    assert wave.shards == (layout.rows_per_shard, cfg.window_samples)
    attrs = dict(group.attrs)
    assert attrs["format_version"] == 1 and attrs["rows"] == n and attrs["dtype"] == dtype
    assert attrs["window_samples"] == 400 and attrs["hop_samples"] == 200 and attrs["sample_rate"] == 8000
    assert attrs["track_ids"] == TRACKS and attrs["work_ids"] == WORKS and attrs["split"] == "train"
    summary = store_summary(path)
    assert summary["compressor"] == compressor and summary["rows"] == n and summary["dtype"] == dtype
    # one file per shard of waveform: 4 shards for 3 full + 1 partial
    assert len(list((path / "waveform").rglob("c/*/*"))) == 4
    # the direct shard path and zarr's own reader agree, in any row order
    assert summary["direct_read"]
    rows = np.random.default_rng(2).integers(0, n, 40)
    np.testing.assert_array_equal(read_windows(path, rows), read_windows(path, rows, fast=False))
    np.testing.assert_array_equal(back, read_windows(path, fast=False))


def test_int16_clips_and_random_reads_keep_order(tmp_path):
    cfg = ShardsConfig(**SMALL, dtype="int16", compressor="zstd")
    windows, targets = make_rows(60, cfg.window_samples)
    windows[0, :3] = [1.7, -2.0, 0.5]
    path = write_store(tmp_path / "s.zarr", cfg, windows, targets)
    rows = [59, 0, 13, 13, -1, 7]
    back = read_windows(path, rows)
    np.testing.assert_allclose(back[1, :3], [1.0, -1.0, 0.5], atol=1e-4)
    expected = np.clip(windows[rows], -1, 1)
    np.testing.assert_allclose(back, expected, atol=TOLERANCE["int16"])
    np.testing.assert_array_equal(read_windows(path, slice(10, 20)), read_windows(path, range(10, 20)))
    assert read_windows(path, 5).shape == (1, 400)
    with pytest.raises(StoreError, match="out of range"):
        read_windows(path, [60])


def test_targets_round_trip_including_3d_extra(tmp_path):
    cfg = ShardsConfig(**SMALL, dtype="float16", compressor="blosc")
    n = 2 * row_layout(cfg).rows_per_shard + 11
    windows, targets = make_rows(n, cfg.window_samples, frames=6)
    path = write_store(tmp_path / "t.zarr", cfg, windows, targets)

    back = read_targets(path)
    assert sorted(back) == ["pitch", "start_s", "track_index", "work_index"]
    assert back["track_index"].dtype == np.int32 and back["work_index"].dtype == np.int32
    assert back["start_s"].dtype == np.float32
    np.testing.assert_array_equal(back["track_index"], targets["track_index"])
    np.testing.assert_array_equal(back["work_index"], targets["work_index"])
    np.testing.assert_array_equal(back["start_s"], targets["start_s"].astype(np.float32))
    assert back["pitch"].shape == (n, 6, 4)
    np.testing.assert_array_equal(back["pitch"], targets["pitch"])
    some = read_targets(path, [n - 1, 3, 3], names=["pitch"])
    np.testing.assert_array_equal(some["pitch"], targets["pitch"][[n - 1, 3, 3]])
    group = open_store(path)
    assert group["targets/pitch"].shards[0] == group["waveform"].shards[0]
    assert group.attrs["targets"] == ["pitch", "start_s", "track_index", "work_index"]


@pytest.mark.parametrize("compressor", ["none", "blosc"])
def test_direct_path_matches_zarr_with_unwritten_chunks_and_shards(tmp_path, compressor):
    """zarr skips chunks (and whole shards) that are all fill value; both read paths give zeros."""
    cfg = ShardsConfig(**SMALL, dtype="float16", compressor=compressor)
    layout = row_layout(cfg)
    n = 3 * layout.rows_per_shard + 7
    windows, targets = make_rows(n, cfg.window_samples, frames=2)
    windows[: layout.rows_per_shard] = 0  # whole first shard silent: no shard file
    windows[layout.rows_per_shard + 13 : layout.rows_per_shard + 26] = 0  # one silent chunk
    targets["pitch"][5:9] = 0
    path = write_store(tmp_path / "z.zarr", cfg, windows, targets)
    assert not (path / "waveform" / "c" / "0").exists()
    rng = np.random.default_rng(0)
    for rows in (slice(None), rng.integers(0, n, 50), [n - 1, 0, layout.rows_per_shard + 20]):
        fast, slow = read_windows(path, rows), read_windows(path, rows, fast=False)
        np.testing.assert_array_equal(fast, slow)
        np.testing.assert_allclose(fast, windows[rows], atol=TOLERANCE["float16"])
        tf, ts = read_targets(path, rows), read_targets(path, rows, fast=False)
        for name in tf:
            np.testing.assert_array_equal(tf[name], ts[name])
    # a damaged shard index is caught by its checksum rather than returning garbage
    shard = path / "waveform" / "c" / "1" / "0"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="checksum"):
        read_windows(path, [layout.rows_per_shard + 1])


def test_unsharded_arrays_fall_back_to_zarr(tmp_path):
    cfg = ShardsConfig(**SMALL)
    windows, targets = make_rows(30, cfg.window_samples)
    path = write_store(tmp_path / "u.zarr", cfg, windows, targets)
    group = zarr.open_group(str(path), mode="r+")
    extra = group.create_array("targets/plain", shape=(30, 2), dtype="f4", chunks=(7, 2))
    extra[:] = np.arange(60, dtype="f4").reshape(30, 2)
    assert not RowReader(extra).direct and RowReader(group["waveform"]).direct
    got = read_targets(path, [29, 3], names=["plain"])["plain"]
    np.testing.assert_array_equal(got, [[58, 59], [6, 7]])
    ds = WindowDataset(path, targets=("plain",))
    np.testing.assert_array_equal(ds[4]["plain"].numpy(), [8, 9])


def test_store_is_sharded_few_files(tmp_path):
    small = {**SMALL, "chunk_mb": 0.005, "shard_mb": 0.08}  # 7 rows per chunk, 15 chunks per shard
    cfg = ShardsConfig(**small, dtype="float16", compressor="zstd")
    layout = row_layout(cfg)
    assert layout.rows_per_shard == 15 * layout.rows_per_chunk
    n = 5 * layout.rows_per_shard + 3
    windows, targets = make_rows(n, cfg.window_samples)
    path = write_store(tmp_path / "s.zarr", cfg, windows, targets)
    wave = open_store(path)["waveform"]
    chunks = math.ceil(n / layout.rows_per_chunk)
    assert wave.nchunks == chunks
    shard_files = list((path / "waveform" / "c").rglob("*"))
    shard_files = [p for p in shard_files if p.is_file()]
    assert len(shard_files) == math.ceil(n / layout.rows_per_shard) == 6
    # whole store (waveform + 3 targets + metadata) has fewer files than waveform chunks alone
    summary = store_summary(path)
    assert summary["file_count"] == len(store_files(path)) < chunks
    assert summary["chunks"] == chunks and summary["bytes"] > 0


def test_exception_leaves_no_store_and_no_temp(tmp_path):
    cfg = ShardsConfig(**SMALL, dtype="float16", compressor="zstd")
    windows, targets = make_rows(200, cfg.window_samples)
    path = tmp_path / "train.zarr"
    with pytest.raises(RuntimeError, match="boom"):
        with ShardWriter(path, cfg=cfg, track_ids=TRACKS, work_ids=WORKS) as w:
            w.add(windows, targets)  # several whole shards already flushed to the temp store
            raise RuntimeError("boom")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []

    write_store(path, cfg, windows, targets)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.zarr"]

    # a failing rewrite leaves the previous good store untouched
    with pytest.raises(ValueError, match="waveform"):
        with ShardWriter(path, cfg=cfg, track_ids=TRACKS, work_ids=WORKS) as w:
            w.add(windows[:10], {k: v[:10] for k, v in targets.items()})
            w.add(windows[:, :5], targets)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.zarr"]
    np.testing.assert_allclose(read_windows(path), windows, atol=TOLERANCE["float16"])

    # a stale temp dir from a killed run is removed by the next write
    (tmp_path / ".train.zarr.tmp-killed").mkdir()
    write_store(path, cfg, windows[:5], {k: v[:5] for k, v in targets.items()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.zarr"]
    assert open_store(path).attrs["rows"] == 5


def test_writer_validation_messages_name_the_array(tmp_path):
    cfg = ShardsConfig(**SMALL)
    windows, targets = make_rows(10, cfg.window_samples, frames=2)
    with ShardWriter(tmp_path / "v.zarr", cfg=cfg, track_ids=TRACKS, work_ids=WORKS) as w:
        with pytest.raises(ValueError, match=r"^waveform: expected shape \(n, 400\)"):
            w.add(windows[:, :399], targets)
        with pytest.raises(ValueError, match="missing required arrays.*start_s"):
            w.add(windows, {k: v for k, v in targets.items() if k != "start_s"})
        with pytest.raises(ValueError, match=r"^targets/work_index: expected 10 rows"):
            w.add(windows, {**targets, "work_index": targets["work_index"][:9]})
        with pytest.raises(ValueError, match=r"^targets/track_index: values must lie in \[0, 7\)"):
            w.add(windows, {**targets, "track_index": np.full(10, 7)})
        w.add(windows, targets)
        with pytest.raises(ValueError, match="differ from the first call"):
            w.add(windows, {k: v for k, v in targets.items() if k != "pitch"})
        with pytest.raises(ValueError, match=r"^targets/pitch: trailing shape"):
            w.add(windows, {**targets, "pitch": np.zeros((10, 3, 4), np.float32)})
    with pytest.raises(ValueError, match="reserved"):
        ShardWriter(tmp_path / "r.zarr", cfg=cfg, track_ids=TRACKS, work_ids=WORKS, attrs={"rows": 1})
    assert open_store(tmp_path / "v.zarr").attrs["rows"] == 10


def test_empty_store_is_valid(tmp_path):
    cfg = ShardsConfig(**SMALL)
    with ShardWriter(tmp_path / "e.zarr", cfg=cfg, track_ids=[], work_ids=[]):
        pass
    assert read_windows(tmp_path / "e.zarr").shape == (0, 400)
    assert len(WindowDataset(tmp_path / "e.zarr")) == 0


def test_non_store_paths_give_clear_errors(tmp_path):
    with pytest.raises(StoreNotFoundError, match="no shard store here"):
        open_store(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not a Zarr v3 store"):
        read_windows(tmp_path / "plain", [0])
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").create_array("waveform", shape=(2, 2), dtype="f4")
    with pytest.raises(StoreError, match="not a musicid shard store"):
        WindowDataset(tmp_path / "other.zarr")


@pytest.fixture(scope="module")
def dataset_store(tmp_path_factory):
    cfg = ShardsConfig(**SMALL, dtype="int16", compressor="blosc")
    n = 2 * row_layout(cfg).rows_per_shard + 9
    windows, targets = make_rows(n, cfg.window_samples, seed=3, frames=3)
    return write_store(tmp_path_factory.mktemp("ds") / "train.zarr", cfg, windows, targets)


def test_dataset_dataloader_workers_match_direct_read(dataset_store):
    direct = read_windows(dataset_store)
    tgt = read_targets(dataset_store)
    ds = WindowDataset(dataset_store, targets=("track_index", "work_index", "start_s", "pitch"))
    assert len(ds) == len(direct)
    item = ds[5]
    assert item["waveform"].dtype == torch.float32 and item["waveform"].shape == (400,)
    np.testing.assert_array_equal(item["waveform"].numpy(), direct[5])
    assert int(item["track_index"]) == tgt["track_index"][5]

    loader = DataLoader(ds, batch_size=16, shuffle=False, num_workers=2)  # batched via __getitems__
    batches = list(loader)
    wave = torch.cat([b["waveform"] for b in batches]).numpy()
    np.testing.assert_array_equal(wave, direct)
    for name in ("track_index", "work_index", "start_s", "pitch"):
        np.testing.assert_array_equal(torch.cat([b[name] for b in batches]).numpy(), tgt[name])

    single = DataLoader(ds, batch_size=None, num_workers=2)  # one __getitem__ per row
    rows = [s["waveform"].numpy() for s in single]
    np.testing.assert_array_equal(np.stack(rows), direct)


def test_preload_equals_lazy_and_batches_equal_items(dataset_store):
    lazy = WindowDataset(dataset_store)
    pre = WindowDataset(dataset_store, preload=True, device="auto")
    assert pre.preloaded and not lazy.preloaded
    idx = [len(lazy) - 1, 0, 17, 17, 60]
    a, b = lazy.read_batch(idx), pre.read_batch(idx)
    assert sorted(a) == sorted(b) == ["pitch", "start_s", "track_index", "waveform", "work_index"]  # every target
    for key in a:
        torch.testing.assert_close(a[key], b[key].cpu(), rtol=0, atol=0)
        torch.testing.assert_close(a[key], torch.stack([lazy[i][key] for i in idx]), rtol=0, atol=0)
        torch.testing.assert_close(pre[17][key].cpu(), lazy[17][key], rtol=0, atol=0)
    full = lazy[list(range(len(lazy)))]
    torch.testing.assert_close(full["waveform"], pre._preloaded["waveform"].cpu(), rtol=0, atol=0)
    with pytest.raises(IndexError):
        lazy[len(lazy)]


def test_uncompressed_shards_are_memory_mapped_and_read_the_same(tmp_path):
    """compressor none: rows come from memory-mapped shard files; every access path agrees with zarr's."""
    cfg = ShardsConfig(**SMALL, dtype="float16", compressor="none", target_compressor="zstd")
    n = 2 * row_layout(cfg).rows_per_shard + 9  # two full shards and a partial one
    windows, targets = make_rows(n, cfg.window_samples, seed=5, frames=3)
    path = write_store(tmp_path / "m.zarr", cfg, windows, targets)
    group = open_store(path)
    assert group.attrs["target_compressor"] == "zstd"
    assert [type(c).__name__ for c in group["targets/pitch"].compressors] == ["ZstdCodec", "Crc32cCodec"]
    mapped = RowReader(group["waveform"])
    assert mapped.mapped and not RowReader(group["targets/pitch"]).mapped
    reference = group["waveform"][:]
    for shard in range(3):
        assert mapped._shard_view(shard) is not None  # memory-mapped, not read through zarr
    rng = np.random.default_rng(0)
    for i in [0, n - 1, *rng.integers(0, n, 20)]:
        np.testing.assert_array_equal(mapped.read_row(int(i)), reference[i])
    picks = np.unique(rng.integers(0, n, 40))
    np.testing.assert_array_equal(mapped.read(picks), reference[picks])
    np.testing.assert_array_equal(mapped.read(slice(3, n)), reference[3:])
    ds = WindowDataset(path)
    np.testing.assert_array_equal(ds[n - 1]["waveform"].numpy(), reference[n - 1].astype(np.float32))
    np.testing.assert_array_equal(ds[7]["pitch"].numpy(), targets["pitch"][7])


def test_store_without_row_provenance(tmp_path):
    """A generated set (no source tracks) writes only its own targets; required names are enforced."""
    cfg = ShardsConfig(**SMALL, compressor="none")
    windows, _ = make_rows(30, cfg.window_samples)
    conf = np.random.default_rng(1).random((30, 8)).astype(np.float16)
    with ShardWriter(tmp_path / "g.zarr", cfg=cfg, required=()) as w:
        w.add(windows, {"confidence": conf})
    ds = WindowDataset(tmp_path / "g.zarr")
    assert ds.targets == ("confidence",)
    np.testing.assert_array_equal(ds[29]["confidence"].numpy(), conf[29])
    with ShardWriter(tmp_path / "empty.zarr", cfg=cfg, required=()):
        pass
    assert len(WindowDataset(tmp_path / "empty.zarr")) == 0
    with pytest.raises(ValueError, match="missing required arrays"):
        with ShardWriter(tmp_path / "x.zarr", cfg=cfg) as w:
            w.add(windows, {"confidence": conf})
    assert not (tmp_path / "x.zarr").exists()
    with pytest.raises(ValueError, match="allowed: track_index"):
        ShardWriter(tmp_path / "y.zarr", cfg=cfg, required=("bin",))


def test_a_truncated_or_bit_flipped_shard_index_is_refused_with_the_file_named(tmp_path):
    """The reader verifies each shard's index checksum (crc32c) before it trusts any offset: a
    truncated shard file or a flipped bit in its index is refused, the file named, never read as data."""
    cfg = ShardsConfig(**SMALL, compressor="none", dtype="float16")
    windows, targets = make_rows(120, 400)
    store = write_store(tmp_path / "s.zarr", cfg, windows, targets)
    shard = sorted(p for p in (store / "waveform").rglob("*") if p.is_file() and p.name != "zarr.json")[0]
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])
    with pytest.raises(StoreError, match=rf"{shard}: shard index checksum mismatch \(corrupt store\?\)"):
        read_windows(store, np.arange(len(windows)))
    flipped = bytearray(good)
    flipped[-10] ^= 0x01  # inside the index at the end of the shard
    shard.write_bytes(bytes(flipped))
    with pytest.raises(StoreError, match=rf"{shard}: shard index checksum mismatch"):
        WindowDataset(store).read_batch(np.arange(10))
    shard.write_bytes(good)
    assert np.allclose(read_windows(store, np.arange(5)), windows[:5], atol=TOLERANCE["float16"])  # restored: read again


@pytest.mark.parametrize("compressor", ["none", "zstd"])
def test_a_bit_flipped_chunk_payload_is_refused_with_the_file_and_chunk_named(tmp_path, compressor):
    """Every chunk carries a crc32c after its payload: a flipped bit inside the samples of a stored
    chunk is refused by every read path (memory-mapped, direct decode, zarr's own codecs, the
    Dataset), the shard file named, while chunks that are intact still read."""
    cfg = ShardsConfig(**SMALL, compressor=compressor, dtype="float16")
    rows_per_chunk = row_layout(cfg).rows_per_chunk
    windows, targets = make_rows(120, cfg.window_samples)
    store = write_store(tmp_path / "s.zarr", cfg, windows, targets)
    assert store_summary(store)["chunk_checksums"]
    shard = sorted(p for p in (store / "waveform").rglob("*") if p.is_file() and p.name != "zarr.json")[0]
    good = shard.read_bytes()
    flipped = bytearray(good)
    flipped[7] ^= 0x10  # inside chunk 0's payload (the index is at the end of the shard)
    shard.write_bytes(bytes(flipped))
    message = rf"{shard}: chunk 0 checksum mismatch \(corrupt store\?\)"
    with pytest.raises(StoreError, match=message):
        read_windows(store, np.arange(3))
    with pytest.raises(StoreError, match=message):
        WindowDataset(store)[1]
    with pytest.raises(StoreError, match=message):
        WindowDataset(store).read_batch(np.arange(rows_per_chunk + 2))
    with pytest.raises(StoreError, match=rf"{store / 'waveform'}: chunk checksum mismatch"):
        read_windows(store, np.arange(3), fast=False)  # zarr's own codec pipeline
    later = np.arange(rows_per_chunk, 2 * rows_per_chunk)  # chunk 1 is intact
    assert np.allclose(read_windows(store, later), windows[later], atol=TOLERANCE["float16"])
    shard.write_bytes(good)
    assert np.allclose(read_windows(store, np.arange(3)), windows[:3], atol=TOLERANCE["float16"])


def test_a_bit_flipped_ragged_store_chunk_is_refused_with_the_array_named(tmp_path):
    from musicid.store.ragged import RaggedStore, write_ragged_store

    items = [(np.random.default_rng(0).random((n, 8)).astype(np.float32), {"id": str(n)}) for n in (40, 30)]
    write_ragged_store(tmp_path / "r.zarr", items, 8, dtype="float32", compressor="none", chunk_mb=0.001)
    shard = sorted(p for p in (tmp_path / "r.zarr" / "frames" / "c").rglob("*") if p.is_file())[-1]
    flipped = bytearray(shard.read_bytes())
    flipped[5] ^= 0x01
    shard.write_bytes(bytes(flipped))
    with pytest.raises(StoreError, match=rf"{tmp_path / 'r.zarr' / 'frames'}: chunk checksum mismatch"):
        RaggedStore(tmp_path / "r.zarr").load_all()
