"""Down-mix and resample to the model rate (soxr, high quality).

soxr is called directly, as librosa's `resample(res_type="soxr_hq")` calls it (same samples, same
length), because importing librosa costs seconds in every short-lived command that decodes.
"""

from __future__ import annotations

import math

import numpy as np
import soxr


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) or (frames,) → (frames,) float32."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    return np.ascontiguousarray(mono, dtype=np.float32)


def to_model_rate(samples: np.ndarray, sample_rate: float, target_rate: int) -> np.ndarray:
    """Mono float32 at `target_rate` (a fractional `sample_rate` plays the signal faster or slower), ceil(n × target / source) samples long (zero-padded or cut)."""
    mono = to_mono(samples)
    if sample_rate == target_rate:
        return mono
    out = soxr.resample(mono, sample_rate, target_rate, quality="soxr_hq").astype(np.float32, copy=False)
    length = int(math.ceil(mono.shape[0] * float(target_rate) / sample_rate))
    if out.shape[0] >= length:
        return np.ascontiguousarray(out[:length])
    return np.concatenate([out, np.zeros(length - out.shape[0], dtype=np.float32)])
