"""Contrastive segment fingerprinter in the spirit of Chang et al. 2021 ("Neural Audio Fingerprint").

A ~1 s segment at 8 kHz → log-mel (torchaudio, on the model's device) → a compact stack of
separable convolutions → divide-and-encode projection → L2-normalised embedding. Trained with
NT-Xent on (clean segment, degraded copy) pairs, similar segments of the same recording land close
together while every other segment in the batch is pushed away.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from musicid.models.io import weights_signature


@dataclass(frozen=True)
class FingerprinterSpec:
    """Everything needed to rebuild the network (stored beside the weights)."""

    sample_rate: int = 8000
    segment_s: float = 1.0
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 64
    f_min: float = 300.0
    f_max: float = 4000.0
    channels: tuple[int, ...] = (16, 32, 64, 128, 128)
    hidden: int = 512
    embedding_dim: int = 128

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_s * self.sample_rate))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FingerprinterSpec":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "channels" in known:
            known["channels"] = tuple(known["channels"])
        return cls(**known)


class LogMel(nn.Module):
    """Log-power mel spectrogram, max-normalised per segment so gain does not change it."""

    def __init__(self, spec: FingerprinterSpec) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=spec.sample_rate, n_fft=spec.n_fft, hop_length=spec.hop_length,
            n_mels=spec.n_mels, f_min=spec.f_min, f_max=spec.f_max, power=2.0, center=True,
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:  # (batch, samples) → (batch, 1, mels, frames)
        power = self.mel(waveform)
        log = 10.0 * torch.log10(power.clamp_min(1e-10))
        log = log - log.amax(dim=(-2, -1), keepdim=True)
        return (log.clamp_min(-80.0) / 40.0 + 1.0).unsqueeze(1)


class SeparableBlock(nn.Module):
    """1×3 then 3×1 convolution, each strided by 2 along its axis, with LayerNorm-style GroupNorm."""

    def __init__(self, c_in: int, c_out: int, stride_f: int, stride_t: int) -> None:
        super().__init__()
        self.conv_t = nn.Conv2d(c_in, c_out, (1, 3), stride=(1, stride_t), padding=(0, 1))
        self.norm_t = nn.GroupNorm(1, c_out)
        self.conv_f = nn.Conv2d(c_out, c_out, (3, 1), stride=(stride_f, 1), padding=(1, 0))
        self.norm_f = nn.GroupNorm(1, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm_t(self.conv_t(x)))
        return F.relu(self.norm_f(self.conv_f(x)))


class Fingerprinter(nn.Module):
    """waveform (batch, segment_samples) → L2-normalised embedding (batch, embedding_dim)."""

    def __init__(self, spec: FingerprinterSpec) -> None:
        super().__init__()
        self.spec = spec
        self.frontend = LogMel(spec)
        blocks, c_in = [], 1
        for c_out in spec.channels:
            blocks.append(SeparableBlock(c_in, c_out, stride_f=2, stride_t=2))
            c_in = c_out
        self.encoder = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d((2, 1))
        self.to_hidden = nn.Linear(c_in * 2, spec.hidden)
        # Divide-and-encode head: each embedding dimension sees only its own slice of the hidden vector.
        if spec.hidden % spec.embedding_dim:
            raise ValueError(f"model.hidden ({spec.hidden}) must be a multiple of model.embedding_dim ({spec.embedding_dim})")
        self.head = nn.Sequential(
            nn.Conv1d(spec.hidden, spec.embedding_dim * 32, 1, groups=spec.embedding_dim),
            nn.ELU(),
            nn.Conv1d(spec.embedding_dim * 32, spec.embedding_dim, 1, groups=spec.embedding_dim),
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        features = self.encoder(self.frontend(waveform))
        hidden = F.relu(self.to_hidden(self.pool(features).flatten(1)))
        embedding = self.head(hidden.unsqueeze(-1)).squeeze(-1)
        return F.normalize(embedding, dim=-1)


def nt_xent(anchor: torch.Tensor, positive: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross entropy over 2N embeddings (SimCLR); inputs are L2-normalised."""
    z = torch.cat([anchor, positive])
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    n = anchor.shape[0]
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def model_signature(model: Fingerprinter) -> str:
    """sha256 over the spec and the exact weights (the spine's signature)."""
    return weights_signature(model.spec.to_dict(), model.state_dict())
