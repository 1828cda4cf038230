"""Seed every generator a training run draws from; optionally make torch's kernels deterministic.

With `train.deterministic: false` runs are already repeatable on one CPU machine (every draw comes
from a seeded generator), but cuDNN autotuning, atomics in CUDA kernels and cuBLAS workspaces may
differ between runs on a GPU. `true` turns on `torch.use_deterministic_algorithms`, fixes cuDNN and
cuBLAS, and seeds Python's and NumPy's global generators too, at a cost the README's table states.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Under DDP rank r seeds torch's global generator with seed + r (its own dropout masks); rank 0 as alone."""
    from musicid.training.distributed import current_world

    torch.manual_seed(seed + current_world().rank)  # CPU and every CUDA device
    if not deterministic:
        return
    random.seed(seed)
    np.random.seed(seed % 2**32)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reproducibility (CUDA ≥ 10.2)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
