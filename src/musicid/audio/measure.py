"""Per-file measurements used to accept, quarantine and describe audio."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, dataclass

import numpy as np

_FRAME_S = 0.05
_FLOOR_DB = -120.0


@dataclass(frozen=True)
class AudioStats:
    duration_s: float
    loudness_lufs: float  # ITU-R BS.1770 integrated loudness; -120 for (near) silence
    rms_dbfs: float
    peak_dbfs: float
    silent_fraction: float  # share of 50 ms frames quieter than the silence threshold
    content_hash: str  # sha256 of the decoded PCM: equal for identical audio in any lossless container

    def as_dict(self) -> dict:
        return asdict(self)


def _db(value: float) -> float:
    return float(max(_FLOOR_DB, 20.0 * np.log10(max(value, 1e-12))))


def _integrated_loudness(samples: np.ndarray, sample_rate: int) -> float:
    if samples.shape[0] < int(0.4 * sample_rate):  # BS.1770 needs one 400 ms block
        return _FLOOR_DB
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pyloudnorm  # here, not at import: it pulls scipy.signal (~1 s) into every stage that decodes

        value = pyloudnorm.Meter(sample_rate).integrated_loudness(samples.astype(np.float64))
    return float(value) if np.isfinite(value) else _FLOOR_DB


def silent_frame_mask(mono: np.ndarray, sample_rate: int, threshold_db: float) -> np.ndarray:
    """Boolean per 50 ms frame: True where the frame RMS is below `threshold_db` dBFS."""
    frame = max(1, int(_FRAME_S * sample_rate))
    usable = mono[: len(mono) - len(mono) % frame] if len(mono) >= frame else np.pad(mono, (0, frame - len(mono)))
    rms = np.sqrt(np.mean(usable.reshape(-1, frame).astype(np.float64) ** 2, axis=1))
    return 20.0 * np.log10(np.maximum(rms, 1e-12)) < threshold_db


def measure(samples: np.ndarray, sample_rate: int, silence_threshold_db: float = -60.0) -> AudioStats:
    """Measure (frames, channels) float32 audio."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    return AudioStats(
        duration_s=round(samples.shape[0] / sample_rate, 6),
        loudness_lufs=round(_integrated_loudness(samples, sample_rate), 3),
        rms_dbfs=round(_db(float(np.sqrt(np.mean(mono.astype(np.float64) ** 2)))), 3),
        peak_dbfs=round(_db(float(np.max(np.abs(samples))) if samples.size else 0.0), 3),
        silent_fraction=round(float(silent_frame_mask(mono, sample_rate, silence_threshold_db).mean()), 4),
        content_hash=hashlib.sha256(np.ascontiguousarray(samples, dtype=np.float32).tobytes()).hexdigest(),
    )
