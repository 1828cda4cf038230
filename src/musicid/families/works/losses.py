"""The work identifier's objective: focal classification + batch-hard triplet + center loss.

Focal loss (Lin et al.) down-weights the works a batch already classifies well; the triplet term
pulls a work's chunks together and pushes the hardest other work away on the unit sphere; the
center loss pulls every embedding toward a learned centre of its work. Each is weighted by a param
(`works.train.*_weight`); CoverHunter's defaults are focal + triplet 0.3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    log_p = F.log_softmax(logits, dim=-1).gather(1, labels[:, None]).squeeze(1)
    return (-(1 - log_p.exp()) ** gamma * log_p).mean()


def batch_hard_triplet(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over anchors of max(0, hardest positive distance − hardest negative distance + margin)."""
    dist = (2 - 2 * embeddings @ embeddings.T).clamp_min(0).sqrt()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = dist.masked_fill(~same | eye, 0).amax(dim=1)
    negative = dist.masked_fill(same, float("inf")).amin(dim=1)
    valid = (same & ~eye).any(dim=1) & torch.isfinite(negative)
    if not valid.any():
        return embeddings.sum() * 0
    return F.relu(positive - negative + margin)[valid].mean()


def ranking_triplet(queries: "np.ndarray", refs: "np.ndarray", same_work: "np.ndarray", itself: "np.ndarray",
                    margin: float) -> list[float]:
    """The batch-hard triplet term of each query against a test set's references (unit embeddings).

    A validation loss for a ranking task: per query, its hardest same-work reference (itself left
    out) against its nearest other-work one; queries without either are skipped.
    """
    import numpy as np

    dist = np.sqrt(np.clip(2 - 2 * queries @ refs.T, 0, None))
    positive = np.where(same_work & ~itself, dist, -np.inf).max(axis=1)
    negative = np.where(~same_work, dist, np.inf).min(axis=1)
    valid = np.isfinite(positive) & np.isfinite(negative)
    return np.maximum(positive - negative + margin, 0)[valid].tolist()


class CenterLoss(nn.Module):
    """Squared distance of each embedding to its class centre (centres are learned parameters)."""

    def __init__(self, n_classes: int, dim: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.randn(n_classes, dim) * 0.1)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return ((embeddings - self.centers[labels]) ** 2).sum(dim=1).mean()
