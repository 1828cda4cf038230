"""The pitch network: a window → per-bin note confidence (logits) and energy share.

Front end (fixed, rebuilt from the spec, not stored): the window's Hann-weighted DFT evaluated at
exactly the family's log-spaced bin centres, as dB below the window's peak. Harmonic stacking
(as in HCQT models): the spectrum shifted by log2(h) octaves for each h in `harmonics` becomes a
channel, so a bin sees its own overtones and sub-harmonic; a position channel tells low from high.
Sub-harmonic channels (h < 1) let a bin see the fundamental below it, so the 3rd or 5th harmonic of
a reed-like (odd-harmonic) tone is not taken for its pitch. A **periodicity** channel (optional,
`periodicity`) adds the window's normalised square difference function (McLeod's NSDF) read at
each bin's period, stacked the same way: below ~50 Hz a 93 ms window cannot resolve the harmonics
(their spacing is under the Hann main lobe), but two to four periods still line up in time.
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
    periodicity: bool = False

    @property
    def scale(self) -> BinScale:
        return BinScale(self.n_bins, self.fmin_hz, self.fmax_hz)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PitchSpec":
        return cls(**data)  # folders saved before `periodicity` existed load with its default (off)


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
        lags = spec.sample_rate / spec.scale.centres()  # each bin's period in samples (fractional)
        self.register_buffer("lag_floor", torch.from_numpy(np.floor(lags).astype(np.int64)), persistent=False)
        self.register_buffer("lag_frac", torch.from_numpy((lags - np.floor(lags)).astype(np.float32)), persistent=False)
        layers: list[nn.Module] = []
        width = len(spec.harmonics) * (2 if spec.periodicity else 1) + 1
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

    def nsdf(self, x: torch.Tensor) -> torch.Tensor:
        """(B, window) → (B, n_bins) in [−1, 1]: NSDF(τ) = 2 Σ x[n]x[n+τ] / Σ (x[n]² + x[n+τ]²) at each
        bin's period τ (linear between integer lags); 1 where the window repeats after τ samples."""
        x = x - x.mean(dim=1, keepdim=True)
        n = x.shape[1]
        acf = torch.fft.irfft(torch.fft.rfft(x, 2 * n).abs() ** 2, 2 * n)[:, :n]
        energy = torch.cumsum(x * x, dim=1)  # energy[:, i] = Σ_{k ≤ i} x[k]²
        lags = torch.arange(n, device=x.device)
        head = energy[:, n - 1 - lags]  # Σ_{k < n−τ} x[k]²
        tail = energy[:, -1:] - torch.where(lags > 0, energy[:, (lags - 1).clamp(min=0)], torch.zeros_like(energy[:, :1]))
        nsdf = 2 * acf / (head + tail + 1e-9 * n)
        lo = nsdf[:, self.lag_floor]
        hi = nsdf[:, (self.lag_floor + 1).clamp(max=n - 1)]
        return lo + (hi - lo) * self.lag_frac

    def stack(self, *rows_in: torch.Tensor) -> torch.Tensor:
        """(B, n_bins) each → (B, harmonics × inputs + 1, n_bins): each input shifted by every harmonic
        (zero outside) + the position channel."""
        rows = []
        for row in rows_in:
            for shift in self.shifts:
                shifted = torch.zeros_like(row)
                if shift >= 0:
                    shifted[:, : row.shape[1] - shift] = row[:, shift:]
                else:
                    shifted[:, -shift:] = row[:, : row.shape[1] + shift]
                rows.append(shifted)
        return torch.cat([torch.stack(rows, dim=1), self.position.expand(rows_in[0].shape[0], 1, -1)], dim=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, window) → (B, channels in, n_bins): the fixed front end the convolutions read."""
        if self.spec.periodicity:
            return self.stack(self.spectrum(x), self.nsdf(x))
        return self.stack(self.spectrum(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, window) → (confidence logits, energy in [0, 1]), each (B, n_bins)."""
        out = self.fc(self.convs(self.features(x)))
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

