"""Spec augmentation of CQT chunks: random erase and pitch roll (a key change).

Roll methods (`works.train.roll_method`, after CoverHunterMPS's options):
- `default`: rotate all bins by k ∈ [−max, max] (what falls off one edge comes back at the other);
- `low_melody`: shift *up* by k ∈ [1, max], dropping what passes the top and filling the bottom with
  the chunk's floor, for music whose melody sits in the lowest bins (after trimming the bass);
- `flex_melody`: estimate the tonal centre (energy-weighted mean bin) and shift by k chosen so
  the centre stays at least an octave from either edge, without wrap-around.
"""

from __future__ import annotations

import torch


def _shift(x: torch.Tensor, k: int) -> torch.Tensor:
    """(T, F) shifted up by k bins (down when k < 0) without wrap-around; vacated bins take the floor."""
    if k == 0:
        return x
    out = torch.full_like(x, float(x.min()))
    if k > 0:
        out[:, k:] = x[:, :-k]
    else:
        out[:, :k] = x[:, -k:]
    return out


def roll_pitch(x: torch.Tensor, method: str, max_bins: int, gen: torch.Generator, bins_per_octave: int = 12) -> torch.Tensor:
    if max_bins <= 0:
        return x
    if method == "default":
        k = int(torch.randint(-max_bins, max_bins + 1, (1,), generator=gen))
        return torch.roll(x, shifts=k, dims=-1)
    if method == "low_melody":
        return _shift(x, int(torch.randint(1, max_bins + 1, (1,), generator=gen)))
    if method == "flex_melody":
        energy = x.clamp_min(0).sum(dim=0)
        centre = float((energy * torch.arange(len(energy))).sum() / energy.sum().clamp_min(1e-6))
        lo = max(-max_bins, int(bins_per_octave - centre))
        hi = min(max_bins, int(len(energy) - bins_per_octave - centre))
        if lo > hi:
            return x
        return _shift(x, int(torch.randint(lo, hi + 1, (1,), generator=gen)))
    raise ValueError(f"roll_method: unknown value {method!r}; allowed: default, low_melody, flex_melody")


def random_erase(x: torch.Tensor, gen: torch.Generator, max_share: float = 0.15) -> torch.Tensor:
    """Blank one random band of time frames or of frequency bins (up to max_share of that axis)."""
    x = x.clone()
    axis = int(torch.randint(0, 2, (1,), generator=gen))
    size = x.shape[axis]
    width = max(1, int(size * max_share * float(torch.rand(1, generator=gen))))
    start = int(torch.randint(0, max(1, size - width + 1), (1,), generator=gen))
    if axis == 0:
        x[start : start + width] = x.min()
    else:
        x[:, start : start + width] = x.min()
    return x
