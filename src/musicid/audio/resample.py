"""Down-mix and resample to the model rate (soxr via librosa: fast and high quality)."""

from __future__ import annotations

import librosa
import numpy as np


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) or (frames,) → (frames,) float32."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    return np.ascontiguousarray(mono, dtype=np.float32)


def to_model_rate(samples: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Mono float32 at `target_rate`."""
    mono = to_mono(samples)
    if sample_rate == target_rate:
        return mono
    return librosa.resample(mono, orig_sr=sample_rate, target_sr=target_rate, res_type="soxr_hq").astype(
        np.float32
    )
