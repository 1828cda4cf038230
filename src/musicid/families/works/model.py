"""The work identifier's networks: CQT → backbone → attention pooling → L2-normalised embedding.

Two backbones, chosen by `works.model.backbone`, so architectures can be compared on one pipeline:
- `conformer` (CoverHunter style): a 2-D convolutional front end that subsamples time by 4, then a
  `torchaudio.models.Conformer` encoder;
- `cqtnet` (CQTNet style): a stack of 2-D convolutions with max pooling, frequency pooled away at
  the end (which makes it nearly transposition invariant by construction).
With `key_normalize` (default) the CQT is first rotated so its strongest pitch class comes first,
which makes the embedding invariant to transposition by construction. Both end in attention pooling over time (padding masked), a linear projection and L2
normalisation; a linear classifier over the training works drives the focal loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class WorkSpec:
    """Everything needed to rebuild the network and its input features (stored beside the weights)."""

    n_bins: int = 96
    bins_per_octave: int = 12
    fmin_hz: float = 32.70
    sample_rate: int = 16000
    hop_s: float = 0.04
    backbone: str = "conformer"
    embedding_dim: int = 128
    dim: int = 128
    conformer_layers: int = 2
    conformer_heads: int = 4
    conformer_ffn: int = 256
    conformer_kernel: int = 15
    cqtnet_channels: tuple[int, ...] = (32, 64, 128)
    dropout: float = 0.1
    n_classes: int = 2
    min_frames: int = 200  # the shortest training chunk: shorter queries are refused
    key_normalize: bool = True  # rotate the CQT so the strongest pitch class lands on bin 0 (transposition invariance)

    @property
    def min_seconds(self) -> float:
        return self.min_frames * self.hop_s

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cqtnet_channels"] = list(self.cqtnet_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WorkSpec":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "cqtnet_channels" in known:
            known["cqtnet_channels"] = tuple(known["cqtnet_channels"])
        return cls(**known)


def _mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


class AttentionPool(nn.Module):
    """Softmax-weighted mean over time of (B, T, C), padding excluded."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(channels, channels // 2), nn.Tanh(), nn.Linear(channels // 2, 1))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        scores = self.score(x).squeeze(-1).masked_fill(~_mask(lengths, x.shape[1]), float("-inf"))
        weights = torch.softmax(scores, dim=1).unsqueeze(-1)
        return (weights * x).sum(dim=1)


class ConformerBackbone(nn.Module):
    def __init__(self, spec: WorkSpec) -> None:
        super().__init__()
        self.front = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )
        freq = (spec.n_bins + 3) // 4
        self.project = nn.Linear(32 * freq, spec.dim)
        self.encoder = __import__("torchaudio").models.Conformer(
            input_dim=spec.dim, num_heads=spec.conformer_heads, ffn_dim=spec.conformer_ffn,
            num_layers=spec.conformer_layers, depthwise_conv_kernel_size=spec.conformer_kernel, dropout=spec.dropout,
        )
        self.out_channels = spec.dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.front(x.unsqueeze(1))  # (B, 32, T/4, F/4)
        b, c, t, f = h.shape
        h = self.project(h.permute(0, 2, 1, 3).reshape(b, t, c * f))
        lengths = torch.clamp((lengths + 3) // 4, min=1, max=t)
        h, lengths = self.encoder(h, lengths)
        return h, lengths


class CQTNetBackbone(nn.Module):
    def __init__(self, spec: WorkSpec) -> None:
        super().__init__()
        layers, channels = [], 1
        for i, out in enumerate(spec.cqtnet_channels):
            layers += [nn.Conv2d(channels, out, (3, 3), padding=1), nn.BatchNorm2d(out), nn.ReLU(),
                       nn.Conv2d(out, out, (3, 3), padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            if i < len(spec.cqtnet_channels) - 1:
                layers.append(nn.MaxPool2d((2, 2)))
            channels = out
        self.net = nn.Sequential(*layers)
        self.reduce = 2 ** (len(spec.cqtnet_channels) - 1)
        self.project = nn.Linear(channels, spec.dim)
        self.out_channels = spec.dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x.unsqueeze(1))  # (B, C, T/r, F/r)
        h = h.amax(dim=3).transpose(1, 2)  # frequency pooled away: (B, T/r, C)
        lengths = torch.clamp(lengths // self.reduce, min=1, max=h.shape[1])
        return self.project(h), lengths


def normalize_key(x: torch.Tensor, bins_per_octave: int) -> torch.Tensor:
    """(B, T, F) CQT rotated along frequency so each item's strongest pitch class comes first.

    Versions of a work in other keys have pitch-class profiles that are rotations of each other,
    so after this they line up (exactly for a transposition by whole bins); the network no longer
    has to learn transposition invariance from a few examples. Non-learned, part of the model.
    """
    b, t, f = x.shape
    per_class = bins_per_octave // 12 if bins_per_octave % 12 == 0 else 1
    octaves = f // bins_per_octave
    folded = x[:, :, : octaves * bins_per_octave].reshape(b, t, octaves, 12, per_class).sum(dim=(1, 2, 4))
    shift = folded.argmax(dim=1) * per_class  # (B,) bins to rotate down
    index = (torch.arange(f, device=x.device)[None, :] + shift[:, None]) % f
    return torch.gather(x, 2, index[:, None, :].expand(b, t, f))


class WorkEncoder(nn.Module):
    """(batch, frames, n_bins) CQT → (batch, embedding_dim) unit vectors; `logits` for training."""

    def __init__(self, spec: WorkSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = ConformerBackbone(spec) if spec.backbone == "conformer" else CQTNetBackbone(spec)
        self.pool = AttentionPool(self.backbone.out_channels)
        self.head = nn.Sequential(nn.Linear(self.backbone.out_channels, spec.embedding_dim), nn.BatchNorm1d(spec.embedding_dim))
        self.classifier = nn.Linear(spec.embedding_dim, spec.n_classes, bias=False)

    def embed_raw(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if self.spec.key_normalize:
            x = normalize_key(x, self.spec.bins_per_octave)
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        h, lengths = self.backbone(x, lengths)
        return self.head(self.pool(h, lengths))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(self.embed_raw(x, lengths), dim=-1)

    def logits(self, raw: torch.Tensor) -> torch.Tensor:
        return self.classifier(raw)
