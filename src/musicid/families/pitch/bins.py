"""The one frequency ↔ bin mapping of the pitch family: `n_bins` log-spaced bins from fmin to fmax.

Bin b (0 ≤ b < n_bins) is centred on  f(b) = fmin · (fmax / fmin) ** (b / (n_bins − 1)),
so bin 0 is fmin, bin n_bins − 1 is fmax, and the spacing is constant in cents:
1200 · log2(fmax / fmin) / (n_bins − 1) (2048 bins over 20–5000 Hz: 4.67 cents). The inverse gives
fractional bins; targets put a note at round(bin) (confidence) or at its fractional bin (energy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BinScale:
    n_bins: int = 2048
    fmin_hz: float = 20.0
    fmax_hz: float = 5000.0

    @property
    def bins_per_octave(self) -> float:
        return (self.n_bins - 1) / np.log2(self.fmax_hz / self.fmin_hz)

    @property
    def cents_per_bin(self) -> float:
        return 1200.0 / self.bins_per_octave

    def bin_of(self, freq_hz: np.ndarray | float) -> np.ndarray:
        """Fractional bin of a frequency (outside [fmin, fmax] falls outside [0, n_bins − 1])."""
        return np.log2(np.asarray(freq_hz, dtype=np.float64) / self.fmin_hz) * self.bins_per_octave

    def freq_of(self, bin_: np.ndarray | float) -> np.ndarray:
        """Frequency of a (fractional) bin: the inverse of `bin_of`."""
        return self.fmin_hz * 2.0 ** (np.asarray(bin_, dtype=np.float64) / self.bins_per_octave)

    def centres(self) -> np.ndarray:
        return self.freq_of(np.arange(self.n_bins))


def cents(estimate_hz: np.ndarray, truth_hz: np.ndarray) -> np.ndarray:
    """Signed error in cents (1200 · log2(estimate / truth))."""
    return 1200.0 * np.log2(np.asarray(estimate_hz, dtype=np.float64) / np.asarray(truth_hz, dtype=np.float64))
