"""Cut a signal into fixed-length segments every `hop` samples.

One definition for both sides of the system: the `shards` stage's training windows and the
segments the fingerprinter embeds for the index and for queries.
"""

from __future__ import annotations

import numpy as np


def segment_starts(n_samples: int, segment: int, hop: int) -> np.ndarray:
    """Start samples covering the signal; a signal no longer than one segment gives one start."""
    if n_samples <= segment:
        return np.zeros(1, dtype=np.int64)
    return np.arange(0, n_samples - segment + 1, hop, dtype=np.int64)


def frame_windows(signal: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, window) float32 windows starting every `hop` samples, and their start samples.

    The tail that does not fill a window is dropped; a signal shorter than one window is
    zero-padded to exactly one window so no track or query disappears.
    """
    if len(signal) < window:
        signal = np.pad(signal, (0, window - len(signal)))
    starts = segment_starts(len(signal), window, hop)
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(signal, dtype=np.float32), window)[starts]
    return np.ascontiguousarray(windows), starts
