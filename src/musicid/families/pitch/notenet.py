"""Onset and frame networks for transcription: a window of frames → per-frame, per-pitch logits.

Both share one shape (the team tunes them apart: each has its own `pos_weight`, conv and fc L2):

1. a fixed **log-frequency spectrogram**, `bins_per_semitone` bins per semitone from the lowest
   key up to Nyquist (triangular filters over an STFT at the frame hop: one column per target frame);
2. **harmonic stacking** (as in HCQT models such as basic-pitch): the spectrogram shifted by
   log2(h) octaves for each h in `harmonics` becomes a channel, so a key's bin sees its overtones;
   plus the spectral flux (each bin's rise since the previous frame), the classic onset cue;
3. 2-D convolutions over time × frequency: (3, 3) at the spectrogram's resolution, max-pooled to
   one bin per semitone, then (3, 19) spanning an octave and a fifth of keys, then (3, 3);
   everything is shift-equivariant in pitch, so every key learns from every note;
4. each key's bin → a (Bi)LSTM over `context_frames` frames centred on each frame, per key
   (its context, not the whole window, so windows stitch without seams) → a linear output layer
   ("fc") with one logit per key and frame. `NoteNet.centre_lstm` computes only the steps that
   reach each window's centre.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

NETWORK = "notenet"  # config.json `spec.network`: which pitch-family network a folder holds


@dataclass(frozen=True)
class NoteNetSpec:
    kind: str = "onset"  # onset | frame: which target it predicts
    sample_rate: int = 16000
    frame_hop: int = 256
    n_fft: int = 4096
    bins_per_semitone: int = 3
    harmonics: list[float] = field(default_factory=lambda: [0.5, 1, 2, 3, 4, 5])
    min_midi: int = 21
    n_pitches: int = 88
    channels: list[int] = field(default_factory=lambda: [16, 8, 8])
    lstm_hidden: int = 8
    context_frames: int = 9
    bidirectional: bool = True
    network: str = NETWORK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NoteNetSpec":
        return cls(**data)


def log_frequency_filters(spec: NoteNetSpec) -> tuple[np.ndarray, int]:
    """(STFT bins × log bins) triangular filters, bin k centred on MIDI min_midi + k / bins_per_semitone,
    up to Nyquist; and the number of log bins."""
    nyquist = spec.sample_rate / 2
    top = 69 + 12 * math.log2(nyquist / 440.0)
    low = spec.min_midi - (spec.bins_per_semitone // 2) / spec.bins_per_semitone  # key k's bins: k·bps … k·bps + bps − 1
    n_bins = int((top - low) * spec.bins_per_semitone) // spec.bins_per_semitone * spec.bins_per_semitone
    midi = low + np.arange(n_bins) / spec.bins_per_semitone
    centres = 440.0 * 2 ** ((midi - 69) / 12)
    fft_hz = np.arange(spec.n_fft // 2 + 1) * spec.sample_rate / spec.n_fft
    width = centres * (2 ** (1 / (12 * spec.bins_per_semitone)) - 1)  # one log bin, in Hz
    width = np.maximum(width, spec.sample_rate / spec.n_fft)  # never narrower than an STFT bin: interpolate
    weights = np.clip(1 - np.abs(fft_hz[:, None] - centres[None]) / width[None], 0, None)
    return (weights / np.maximum(weights.sum(axis=0, keepdims=True), 1e-9)).astype(np.float32), n_bins


class NoteNet(nn.Module):
    def __init__(self, spec: NoteNetSpec) -> None:
        super().__init__()
        self.spec = spec
        filters, self.n_bins = log_frequency_filters(spec)
        self.register_buffer("filters", torch.from_numpy(filters), persistent=False)
        self.register_buffer("window", torch.hann_window(spec.n_fft), persistent=False)
        self.shifts = [int(round(math.log2(h) * 12 * spec.bins_per_semitone)) for h in spec.harmonics]
        # (3, 3) at bins_per_semitone, pooled to one bin per semitone, then (3, 19): an octave and a fifth of keys
        widths = [(3, 3), (3, 19), (3, 3)]
        layers: list[nn.Module] = []
        inp = len(spec.harmonics) + 1  # + spectral flux
        for i, out in enumerate(spec.channels):
            kt, kf = widths[min(i, len(widths) - 1)]
            layers += [nn.Conv2d(inp, out, (kt, kf), padding=(kt // 2, kf // 2)), nn.BatchNorm2d(out), nn.ReLU()]
            if i == 0:
                layers.append(nn.MaxPool2d((1, spec.bins_per_semitone)))
            inp = out
        self.convs = nn.Sequential(*layers)
        self.lstm = nn.LSTM(inp, spec.lstm_hidden, batch_first=True, bidirectional=spec.bidirectional)
        self.fc = nn.Linear(spec.lstm_hidden * (2 if spec.bidirectional else 1), 1)
        with torch.no_grad():  # start at the prior: few keys sound in a frame, fewer start
            self.fc.bias.fill_(-math.log(spec.n_pitches / (1 if spec.kind == "onset" else 4)))

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """(B, frames · hop) → (B, frames, log bins): log1p of the filtered power, frame t centred on sample t · hop."""
        frames = x.shape[1] // self.spec.frame_hop
        stft = torch.stft(x, self.spec.n_fft, self.spec.frame_hop, window=self.window, center=True, return_complex=True)
        power = stft.abs()[..., :frames] ** 2  # (B, fft bins, frames)
        return torch.log1p(100.0 * (power.transpose(1, 2) @ self.filters))

    def stack(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, T, F) → (B, harmonics + 1, T, F): the spectrogram shifted by each harmonic (zero outside),
        then its spectral flux (the rise since the previous frame: where notes start)."""
        rows = []
        f = spec.shape[-1]
        for shift in self.shifts:
            shifted = torch.zeros_like(spec)
            if shift >= 0:
                shifted[..., : f - shift] = spec[..., shift:]
            else:
                shifted[..., -shift:] = spec[..., : f + shift]
            rows.append(shifted)
        rows.append(torch.relu(spec - nn.functional.pad(spec, (0, 0, 1, 0))[:, :-1]))
        return torch.stack(rows, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, frames · hop) waveform → (B, frames, n_pitches) logits."""
        feats = self.convs(self.stack(self.spectrogram(x)))  # (B, C, T, F)
        keys = feats[..., : self.spec.n_pitches]  # (B, C, T, P): after pooling, bin k is key k
        b, c, t, p = keys.shape
        seq = keys.permute(0, 3, 2, 1).reshape(b * p, t, c)  # per key, along time
        logits = self.fc(self.centre_lstm(seq)).reshape(b, p, t)
        return logits.transpose(1, 2)

    def centre_lstm(self, seq: torch.Tensor) -> torch.Tensor:
        """(N, T, C) → (N, T, hidden · directions): `self.lstm` run over the `context_frames` window
        centred on each frame (zeros beyond the edges), read at the centre.

        The same numbers as unfolding every window and running `self.lstm` on it (within float
        rounding; tests/test_pitch_notes.py checks it), at about half the cost: each frame's input
        projection is made once rather than once per window, and each direction runs only the steps
        that reach the centre (frames t − k//2 … t forward, t + (k − 1 − k//2) … t backward)."""
        n, t, _ = seq.shape
        k = self.spec.context_frames
        left, right = k // 2, k - 1 - k // 2
        directions = [("", range(0, left + 1))]
        if self.lstm.bidirectional:
            directions.append(("_reverse", range(left + right, left - 1, -1)))
        outs = []
        for suffix, offsets in directions:
            w_hh = getattr(self.lstm, "weight_hh_l0" + suffix)
            bias = getattr(self.lstm, "bias_ih_l0" + suffix) + getattr(self.lstm, "bias_hh_l0" + suffix)
            proj = seq @ getattr(self.lstm, "weight_ih_l0" + suffix).T  # (N, T, 4H), no bias: padding stays 0
            proj = nn.functional.pad(proj, (0, 0, left, right))
            h = cell = None
            for offset in offsets:  # window position → frame t − left + offset, for every t at once
                gates = proj[:, offset : offset + t] + bias
                if h is not None:
                    gates = gates + h @ w_hh.T
                i, f, g, o = gates.chunk(4, dim=-1)  # PyTorch's gate order
                i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
                cell = i * g if cell is None else f * cell + i * g
                h = o * torch.tanh(cell)
            outs.append(h)
        return torch.cat(outs, dim=-1)

    def l2_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ w² of the convolutions, Σ w² of the output layer): the `conv_l2` and `fc_l2` penalties."""
        conv = sum((m.weight**2).sum() for m in self.convs if isinstance(m, nn.Conv2d))
        return conv, (self.fc.weight**2).sum()
