"""Constant-Q magnitude spectrogram in torch (time-domain kernels, one strided convolution).

librosa refuses CoverHunter's own setting (96 bins from C1 at 16 kHz: the top filters' pass-band
reaches Nyquist), and its recursive downsampling is slow per track. Here each bin k is a windowed
complex exponential at f_k = fmin · 2^(k / bins_per_octave) of length Q · sr / f_k (Q from the
bin spacing), normalised by its length, all zero-padded to the longest and applied as one
`conv1d` with stride = hop: exact constant-Q resolution, on whatever device the tensor is on.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class ConstantQ(nn.Module):
    """(batch, samples) → (batch, n_bins, (samples - 1) // hop + 1) log-compressed CQT magnitude, frames centred on k·hop."""

    def __init__(self, sample_rate: int, hop_length: int, fmin: float, n_bins: int, bins_per_octave: int) -> None:
        super().__init__()
        self.hop_length = hop_length
        q = 1.0 / (2 ** (1.0 / bins_per_octave) - 1)
        freqs = fmin * 2.0 ** (np.arange(n_bins) / bins_per_octave)
        if freqs[-1] >= sample_rate / 2:
            raise ValueError(f"top CQT bin {freqs[-1]:.0f} Hz is not below Nyquist ({sample_rate / 2:.0f} Hz)")
        lengths = np.ceil(q * sample_rate / freqs).astype(int)
        width = int(lengths.max()) | 1  # odd, so every kernel has a centre sample
        kernels = np.zeros((n_bins, width), dtype=np.complex64)
        for k, (freq, length) in enumerate(zip(freqs, lengths)):
            n = np.arange(length) - (length - 1) / 2
            window = np.hanning(length + 2)[1:-1]
            start = (width - length) // 2
            kernels[k, start : start + length] = window * np.exp(2j * math.pi * freq * n / sample_rate) / length
        weight = np.concatenate([kernels.real, kernels.imag])[:, None, :]
        self.register_buffer("weight", torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)))
        self.n_bins, self.width = n_bins, width

    def frames(self, samples: int) -> int:
        return (samples - 1) // self.hop_length + 1

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        pad = self.width // 2
        x = torch.nn.functional.pad(signal[:, None, :], (pad, pad))
        out = torch.nn.functional.conv1d(x, self.weight, stride=self.hop_length)
        real, imag = out[:, : self.n_bins], out[:, self.n_bins :]
        magnitude = torch.sqrt(real * real + imag * imag + 1e-12)
        return torch.log1p(magnitude * 100.0)
