"""CQT features of whole performances, one ragged Zarr store per split, leakage-checked.

A performance is decoded, mixed to mono, resampled to `features.sample_rate` and cut at
`max_duration_s`; its constant-Q magnitude (musicid.audio.cqt, log-compressed, scaled so the
performance's loudest bin is 1) is stored frame by frame. Speed-augmented copies (resampled, so
tempo and key move together, like a tape at another speed) are made for the **train split only**,
after splitting: no copy of a validation or test performance exists anywhere, and
`check_store_leakage` proves it on the stores themselves. The train store can also hold extra
works rendered by the embedded generator (`extra_synthetic_works`, role `train_synthetic`): more
works to learn from, never indexed and never among the references of an evaluation.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm import tqdm

from musicid.audio import DecodeError, decode, to_model_rate
from musicid.audio.cqt import ConstantQ
from musicid.config import WorksFeaturesConfig
from musicid.data.splits import raise_leaks
from musicid.fsutil import atomic_dir, write_json
from musicid.parallel import process_pool
from musicid.store.ragged import RaggedStore, write_ragged_store

COLUMNS = ("track_id", "work_id", "role", "speed", "content_hash")


def performance_signal(path: str | Path, cfg: WorksFeaturesConfig) -> np.ndarray:
    """Mono float32 at the feature rate, at most max_duration_s long (DecodeError when undecodable)."""
    audio = decode(path)
    signal = to_model_rate(audio.samples, audio.sample_rate, cfg.sample_rate)
    return signal[: int(cfg.max_duration_s * cfg.sample_rate)]


def speed_change(signal: np.ndarray, sample_rate: int, speed: float) -> np.ndarray:
    """The signal played `speed` times faster (pitch follows), at the same sample rate."""
    if speed == 1.0:
        return signal
    return to_model_rate(signal, sample_rate * speed, sample_rate)  # as librosa's soxr_hq resample, without its import


class CQTExtractor:
    """Signal → (frames, n_bins) float32, as stored and as queries are computed at identify time."""

    def __init__(self, cfg: WorksFeaturesConfig, device: str | torch.device = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.cqt = ConstantQ(cfg.sample_rate, cfg.hop_samples, cfg.fmin_hz, cfg.n_bins, cfg.bins_per_octave).to(self.device)

    @torch.inference_mode()
    def __call__(self, signal: np.ndarray) -> np.ndarray:
        spec = self.cqt(torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32))[None].to(self.device))[0]
        spec = spec / spec.max().clamp_min(1e-6)
        return spec.T.float().cpu().numpy()

    def frames_for(self, seconds: float) -> int:
        return self.cqt.frames(int(seconds * self.cfg.sample_rate))


_EXTRACTORS: dict[str, CQTExtractor] = {}


def _extractor(cfg: WorksFeaturesConfig) -> CQTExtractor:
    """One CQTExtractor per process and config; a pool worker computes on one thread (the pool is the parallelism)."""
    key = cfg.model_dump_json()
    if key not in _EXTRACTORS:
        if multiprocessing.parent_process() is not None:
            torch.set_num_threads(1)
        _EXTRACTORS[key] = CQTExtractor(cfg)
    return _EXTRACTORS[key]


def _performance_job(args: tuple[str, WorksFeaturesConfig, list[float]]) -> tuple[list[np.ndarray] | None, str]:
    """Decode one performance → its CQT at each speed (stored dtype), or None and the reason it failed."""
    path, cfg, speeds = args
    try:
        signal = performance_signal(path, cfg)
    except DecodeError as exc:
        return None, f"{exc.reason}: {exc.detail}"
    extract = _extractor(cfg)
    return [extract(speed_change(signal, cfg.sample_rate, speed)).astype(cfg.dtype) for speed in speeds], ""


def _map(job: Any, jobs: list[Any], workers: int, stack: contextlib.ExitStack) -> Iterator[Any]:
    """job over jobs in order: in worker processes when there are several of both, else in this one."""
    if workers > 1 and len(jobs) > 1:
        return stack.enter_context(process_pool(workers)).map(job, jobs)
    return map(job, jobs)


def _items(tracks: list[dict[str, Any]], audio_root: Path, cfg: WorksFeaturesConfig, speeds: list[float],
           workers: int, desc: str, skipped: list[dict[str, Any]]) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """(CQT frames, columns) per performance and speed, in manifest order; undecodable ones go to `skipped`."""
    jobs = [(str(audio_root / t["path"]), cfg, speeds) for t in tracks]
    with contextlib.ExitStack() as stack:
        results = _map(_performance_job, jobs, workers, stack)
        for track, (copies, error) in tqdm(zip(tracks, results), total=len(jobs), desc=desc, unit="track"):
            if copies is None:
                skipped.append({"track_id": track["track_id"], "reason": error})
                continue
            for speed, frames in zip(speeds, copies):
                yield frames, {
                    "track_id": track["track_id"], "work_id": track["work_id"], "role": track["role"],
                    "speed": float(speed), "content_hash": track["content_hash"],
                }


SYNTHETIC_ROLE = "train_synthetic"
SYNTHETIC_FIRST_WORK = 1_000_000  # generator work indices far above any archive's, so compositions never repeat


def _synthetic_job(args: tuple[int, int, WorksFeaturesConfig]) -> tuple[int, int, np.ndarray]:
    """Render one extra work's version → its CQT (stored dtype)."""
    from musicid.config import SynthConfig
    from musicid.data.synth import render_track

    work, version, cfg = args
    lo, hi = cfg.extra_synthetic_duration_s
    synth = SynthConfig(seed=cfg.extra_synthetic_seed, min_duration_s=lo, max_duration_s=hi)
    audio, rate, _ = render_track(work, version, synth)
    return work, version, _extractor(cfg)(to_model_rate(audio, rate, cfg.sample_rate)).astype(cfg.dtype)


def synthetic_items(cfg: WorksFeaturesConfig, workers: int) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Training-only works rendered by the embedded generator: role train_synthetic, never indexed or scored."""
    jobs = [(SYNTHETIC_FIRST_WORK + w, v, cfg) for w in range(cfg.extra_synthetic_works)
            for v in range(cfg.extra_synthetic_versions)]
    with contextlib.ExitStack() as stack:
        results = _map(_synthetic_job, jobs, workers, stack)
        for work, version, frames in tqdm(results, total=len(jobs), desc="works-features: extra synthetic works",
                                          unit="track"):
            yield frames, {
                "track_id": f"synthetic-{work}-v{version}", "work_id": f"synthetic-{work}", "role": SYNTHETIC_ROLE,
                "speed": 1.0, "content_hash": f"synthetic:{cfg.extra_synthetic_seed}:{work}:{version}",
            }


def check_store_leakage(stores: dict[str, RaggedStore]) -> dict[str, Any]:
    """Prove on the stores that evaluation never meets training audio; raise LeakageError otherwise."""
    problems = []
    train = stores["train"]
    train_tracks, train_hashes = set(train.column("track_id")), set(train.column("content_hash"))
    train_works = set(train.column("work_id"))
    for split, store in stores.items():
        if split == "train":
            continue
        speeds = {s for s in store.column("speed") if s != 1.0}
        if speeds:
            problems.append(f"{split}.zarr holds speed-augmented copies ({sorted(speeds)}): only train may")
        problems += [f"track {t!r} of {split}.zarr is also in train.zarr" for t in sorted(set(store.column("track_id")) & train_tracks)]
        problems += [f"audio {h[:12]} of {split}.zarr is also in train.zarr" for h in sorted(set(store.column("content_hash")) & train_hashes)]
        for track, work, role in zip(store.column("track_id"), store.column("work_id"), store.column("role")):
            if role.endswith("_unseen") and work in train_works:
                problems.append(f"unseen work {work!r} ({track} in {split}.zarr) has performances in train.zarr")
    raise_leaks(problems, "feature store leakage")
    return {"ok": True, "checked": sorted(stores), "train_copies_per_performance": len(set(train.column("speed")))}


def build_feature_stores(roles: dict[str, list[dict[str, Any]]], audio_root: str | Path, out_dir: str | Path,
                         cfg: WorksFeaturesConfig, workers: int = 1) -> dict[str, Any]:
    """train.zarr (× train_speeds), val.zarr, test.zarr + summary.json; leakage-checked before publishing."""
    from musicid.families.works.split import ROLE_SPLIT

    audio_root, out_dir = Path(audio_root), Path(out_dir)
    summary: dict[str, Any] = {"stores": {}, "skipped": []}
    with atomic_dir(out_dir) as staging:
        stores = {}
        for split in ("train", "val", "test"):
            tracks = [{**t, "role": role} for role, members in roles.items() if ROLE_SPLIT[role] == split for t in members]
            tracks.sort(key=lambda t: t["track_id"])
            speeds = list(cfg.train_speeds) if split == "train" else [1.0]
            items = _items(tracks, audio_root, cfg, speeds, workers, f"works-features: {split}", summary["skipped"])
            if split == "train" and cfg.extra_synthetic_works:
                items = itertools.chain(items, synthetic_items(cfg, workers))
            write_ragged_store(
                staging / f"{split}.zarr", items,
                cfg.n_bins, dtype=cfg.dtype, compressor=cfg.compressor, level=cfg.level, chunk_mb=cfg.chunk_mb,
                shard_mb=cfg.shard_mb, attrs={"split": split, "features": cfg.model_dump(mode="json")},
            )
            stores[split] = RaggedStore(staging / f"{split}.zarr")
            summary["stores"][split] = stores[split].summary() | {"path": str(out_dir / f"{split}.zarr"),
                                                                 "speeds": speeds}
        summary["leakage"] = check_store_leakage(stores)
        write_json(staging / "summary.json", summary)
    return summary
