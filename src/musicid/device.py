"""Device choice shared by training, indexing and data loading."""

from __future__ import annotations

import os

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`auto` (or None) → CUDA when available, else CPU; anything else is passed to torch."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:  # a DDP rank (torchrun): its own GPU
            return torch.device(f"cuda:{os.environ['LOCAL_RANK']}")
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
