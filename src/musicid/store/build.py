"""Build one split's Zarr store from a manifest: decode → mono → model rate → fixed windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from musicid.audio import decode, to_model_rate
from musicid.audio.framing import frame_windows
from musicid.config import ShardsConfig
from musicid.parallel import process_pool


def _track_windows(args: tuple[str, int, ShardsConfig]) -> tuple[np.ndarray, np.ndarray]:
    path, position, cfg = args
    audio = decode(path)
    signal = to_model_rate(audio.samples, audio.sample_rate, cfg.sample_rate)
    if cfg.strategy == "grid":
        return frame_windows(signal, cfg.window_samples, cfg.hop_samples)
    return strategy_windows(signal, cfg, np.random.default_rng([cfg.seed, position]))


def strategy_windows(signal: np.ndarray, cfg: ShardsConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Windows where `cfg.strategy` puts them (musicid.audio.slicing); as many as the grid unless windows_per_track."""
    from musicid.audio.framing import segment_starts
    from musicid.audio.slicing import TrackAnalysis, choose_starts

    window = cfg.window_samples
    if len(signal) <= window:  # one (padded) window, as the grid gives
        return frame_windows(signal, window, cfg.hop_samples)
    count = cfg.windows_per_track or len(segment_starts(len(signal), window, cfg.hop_samples))
    starts = choose_starts(TrackAnalysis(signal, cfg.sample_rate), cfg.window_s, count, cfg.strategy, rng)
    samples = np.minimum(np.round(starts * cfg.sample_rate).astype(np.int64), len(signal) - window)
    return np.stack([signal[s : s + window] for s in samples]).astype(np.float32), samples


def iter_track_windows(
    tracks: list[dict[str, Any]], audio_root: Path, cfg: ShardsConfig, workers: int, desc: str
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (track position, windows, start samples) in manifest order, decoding in parallel."""
    jobs = [(str(audio_root / t["path"]), position, cfg) for position, t in enumerate(tracks)]
    with tqdm(total=len(jobs), desc=desc, unit="track") as bar:
        if workers > 1 and len(jobs) > 1:
            with process_pool(workers) as pool:
                for position, (windows, starts) in enumerate(pool.map(_track_windows, jobs)):
                    bar.update()
                    yield position, windows, starts
        else:
            for position, job in enumerate(jobs):
                windows, starts = _track_windows(job)
                bar.update()
                yield position, windows, starts


def build_split_store(
    tracks: list[dict[str, Any]], audio_root: str | Path, out_path: str | Path, cfg: ShardsConfig,
    workers: int = 1, split: str = "",
) -> int:
    """Write the store for one split; returns the number of windows (rows)."""
    from musicid.store.writer import ShardWriter

    track_ids = [t["track_id"] for t in tracks]
    work_ids = sorted({t["work_id"] for t in tracks})
    work_index = {work: i for i, work in enumerate(work_ids)}
    rows = 0
    attrs = {"split": split, "source_paths": [t["path"] for t in tracks]}
    with ShardWriter(out_path, cfg=cfg, track_ids=track_ids, work_ids=work_ids, attrs=attrs) as writer:
        for position, windows, starts in iter_track_windows(
            tracks, Path(audio_root), cfg, workers, desc=f"shards: {split or Path(out_path).stem}"
        ):
            n = len(windows)
            writer.add(
                windows,
                {
                    "track_index": np.full(n, position, dtype=np.int32),
                    "work_index": np.full(n, work_index[tracks[position]["work_id"]], dtype=np.int32),
                    "start_s": (starts / cfg.sample_rate).astype(np.float32),
                },
            )
            rows += n
    return rows
