"""The pitch network: a window → per-bin note confidence (logits) and energy share.

Front end (fixed, rebuilt from the spec, not stored): the window's Hann-weighted DFT evaluated at
exactly the family's log-spaced bin centres, as dB below the window's peak. Harmonic stacking
(as in HCQT models): the spectrum shifted by log2(h) octaves for each h in `harmonics` becomes a
channel, so a bin sees its own overtones and sub-harmonic; a position channel tells low from high.
Then dilated 1-D convolutions over bins and a 1×1 output layer ("fc") with two outputs per bin.
The network is shift-equivariant in log frequency, so every bin learns from every note.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from musicid.families.pitch.bins import BinScale

FLOOR_DB = 80.0
SILENCE_DB = -70.0  # a window whose loudest bin is quieter than this (full-scale sine: 0 dB) stays near the floor


@dataclass(frozen=True)
class PitchSpec:
    sample_rate: int = 44100
    window_samples: int = 4096
    n_bins: int = 2048
    fmin_hz: float = 20.0
    fmax_hz: float = 5000.0
    harmonics: list[float] = field(default_factory=lambda: [0.5, 1, 2, 3, 4, 5, 6])
    channels: list[int] = field(default_factory=lambda: [32, 32, 32])
    kernel: int = 5
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4])

    @property
    def scale(self) -> BinScale:
        return BinScale(self.n_bins, self.fmin_hz, self.fmax_hz)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PitchSpec":
        return cls(**data)


class PitchNet(nn.Module):
    def __init__(self, spec: PitchSpec) -> None:
        super().__init__()
        self.spec = spec
        n = np.arange(spec.window_samples)
        hann = np.hanning(spec.window_samples)
        omega = 2 * np.pi * spec.scale.centres()[:, None] / spec.sample_rate * n[None]
        norm = 2.0 / hann.sum()
        self.register_buffer("cos_basis", torch.from_numpy((np.cos(omega) * hann * norm).T.astype(np.float32)), persistent=False)
        self.register_buffer("sin_basis", torch.from_numpy((np.sin(omega) * hann * norm).T.astype(np.float32)), persistent=False)
        self.register_buffer("position", torch.linspace(-1, 1, spec.n_bins)[None, None], persistent=False)
        self.shifts = [int(round(math.log2(h) * spec.scale.bins_per_octave)) for h in spec.harmonics]
        layers: list[nn.Module] = []
        width = len(spec.harmonics) + 1
        dilations = list(spec.dilations) + [1] * max(0, len(spec.channels) - len(spec.dilations))
        for out, dilation in zip(spec.channels, dilations):
            layers += [nn.Conv1d(width, out, spec.kernel, padding=dilation * (spec.kernel // 2), dilation=dilation),
                       nn.ReLU()]
            width = out
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Conv1d(width, 2, 1)  # per bin: confidence logit, energy logit
        with torch.no_grad():  # start at the prior (a few active bins of thousands), not at 0.5 everywhere
            self.fc.bias.fill_(-math.log(spec.n_bins))

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """(B, window) → (B, n_bins) in [0, 1]: dB below the window's peak, floored at −80 dB.

        The peak reference never drops below SILENCE_DB, so near-silence is not amplified into notes.
        """
        x = x - x.mean(dim=1, keepdim=True)
        power = (x @ self.cos_basis) ** 2 + (x @ self.sin_basis) ** 2
        db = 10 * torch.log10(power + 1e-12)
        db = db - db.amax(dim=1, keepdim=True).clamp(min=SILENCE_DB)
        return (db.clamp(min=-FLOOR_DB) + FLOOR_DB) / FLOOR_DB

    def stack(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, n_bins) → (B, harmonics + 1, n_bins): shifted copies (zero outside) + the position channel."""
        rows = []
        for shift in self.shifts:
            shifted = torch.zeros_like(spec)
            if shift >= 0:
                shifted[:, : spec.shape[1] - shift] = spec[:, shift:]
            else:
                shifted[:, -shift:] = spec[:, : spec.shape[1] + shift]
            rows.append(shifted)
        return torch.cat([torch.stack(rows, dim=1), self.position.expand(spec.shape[0], 1, -1)], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, window) → (confidence logits, energy in [0, 1]), each (B, n_bins)."""
        out = self.fc(self.convs(self.stack(self.spectrum(x))))
        return out[:, 0], torch.sigmoid(out[:, 1])

    def l2_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ w² of the convolutions, Σ w² of the output layer): the `conv_l2` and `fc_l2` penalties."""
        conv = sum((m.weight**2).sum() for m in self.convs if isinstance(m, nn.Conv1d))
        return conv, (self.fc.weight**2).sum()


def refine_bins(confidence: np.ndarray, energy: np.ndarray, peaks: np.ndarray, reach: int = 3) -> np.ndarray:
    """Sub-bin positions of `peaks`: the energy-weighted centroid over ±reach bins (targets are Gaussians)."""
    out = np.asarray(peaks, dtype=np.float64).copy()
    for j, b in enumerate(np.asarray(peaks, dtype=np.int64)):
        lo, hi = max(0, b - reach), min(len(energy), b + reach + 1)
        w = np.clip(energy[lo:hi], 0, None)
        if w.sum() > 0:
            out[j] = float(np.sum(w * np.arange(lo, hi)) / w.sum())
    return out


def pick_peaks(confidence: np.ndarray, threshold: float, min_distance: int) -> np.ndarray:
    """Bins of local maxima ≥ threshold, strongest first, at least `min_distance` bins apart."""
    candidates = np.flatnonzero(confidence >= threshold)
    kept: list[int] = []
    for b in candidates[np.argsort(-confidence[candidates], kind="stable")]:
        if all(abs(int(b) - k) >= min_distance for k in kept):
            kept.append(int(b))
    return np.array(kept, dtype=np.int64)


def frame_pitches_hz(confidence: np.ndarray, energy: np.ndarray, scale: BinScale, threshold: float,
                     min_distance_cents: float) -> tuple[np.ndarray, np.ndarray]:
    """(peak bins, their refined frequencies in Hz) of one frame: what predict, training and evaluation read."""
    peaks = pick_peaks(confidence, threshold, max(1, int(min_distance_cents / scale.cents_per_bin)))
    return peaks, scale.freq_of(refine_bins(confidence, energy, peaks))


def top_pitch_hz(confidence: np.ndarray, energy: np.ndarray, scale: BinScale) -> float:
    """The single most confident pitch of a frame, refined (what single-note scores read)."""
    return float(scale.freq_of(refine_bins(confidence, energy, np.array([int(np.argmax(confidence))]))[0]))

