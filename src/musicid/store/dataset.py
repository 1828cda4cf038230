"""`WindowDataset`: a torch Dataset over a window store, lazily opened per DataLoader worker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from musicid.device import resolve_device
from musicid.store.writer import TARGETS, WAVEFORM, decode_windows

from musicid.store.group import StoreError, open_store
from musicid.store.reader import SMALL_TARGET_BYTES, read_targets, read_windows
from musicid.store.shard_decoding import RowReader, _read_rows, _row_plan


class WindowDataset(Dataset):
    """Windows of one store as a map-style torch Dataset.

    `ds[i]` is a dict: "waveform" float32 tensor (window_samples,) plus one tensor per name in
    `targets` (default: every target the store has; stored dtype, e.g. track_index int32). `ds[list_of_ints]` and
    `ds.read_batch(indices)` return the same dict batched (leading axis = len(indices)) from one
    read per array, so `DataLoader(ds, batch_size=B)` (via `__getitems__`) or
    `DataLoader(ds, sampler=BatchSampler(RandomSampler(ds), B, False), batch_size=None)` read each
    batch in one request instead of B.

    Lazy mode keeps only the path (and settings); each process (DataLoader workers included) opens
    its own zarr handles and shard files on first use, keyed on its pid. Small targets (<= 16 MiB,
    e.g. indices and start times; `target_cache_mb` sets the size) are read whole once per process,
    which is what a memory-mapped waveform plus in-memory targets costs. `preload=True` reads everything
    into memory once as torch tensors (float32 waveform) and moves them to `device` ("auto": cuda if
    available); a dataset preloaded onto a GPU is meant for `num_workers=0`. `fast=False` reads
    through zarr's own API instead of the direct shard path (see the module docstring).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        preload: bool = False,
        device: str | torch.device | None = None,
        targets: Sequence[str] | None = None,
        fast: bool = True,
        target_cache_mb: float = SMALL_TARGET_BYTES / 2**20,
    ) -> None:
        self.path = str(path)
        self.fast = fast
        self.target_cache_bytes = int(target_cache_mb * 2**20)
        group = open_store(self.path)
        available = set(group[TARGETS].array_keys())
        self.targets = tuple(sorted(available) if targets is None else targets)
        unknown = [t for t in self.targets if t not in available]
        if unknown:
            raise StoreError(f"{self.path}: targets {unknown} not in this store (has {sorted(available)})")
        self.dtype: str = group.attrs["dtype"]
        self.window_samples: int = int(group.attrs["window_samples"])
        self.sample_rate: int = int(group.attrs["sample_rate"])
        self._len = int(group[WAVEFORM].shape[0])
        self.device = resolve_device(device) if device is not None else None
        self._handles: dict[int, dict[str, Any]] = {}
        self._preloaded: dict[str, torch.Tensor] | None = None
        if preload:
            data = {WAVEFORM: torch.from_numpy(read_windows(group, fast=fast))}
            for name, values in read_targets(group, names=self.targets, fast=fast).items():
                data[name] = torch.from_numpy(np.ascontiguousarray(values))
            if self.device is not None:
                data = {k: v.to(self.device) for k, v in data.items()}
            self._preloaded = data

    @property
    def preloaded(self) -> bool:
        return self._preloaded is not None

    def __len__(self) -> int:
        return self._len

    # ------------------------------------------------------------------------------- per-process state
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}  # zarr handles and open files are per process; workers open their own
        return state

    def _open(self) -> dict[str, Any]:
        pid = os.getpid()
        handles = self._handles.get(pid)
        if handles is None:
            group = open_store(self.path)
            targets: dict[str, Any] = {}
            for name in self.targets:
                array = group[TARGETS][name]
                reader = RowReader(array, fast=self.fast)
                # tiny targets (indices, start times) are read whole once: a memory lookup per row
                targets[name] = reader.read(slice(0, self._len)) if array.nbytes <= self.target_cache_bytes else reader
            handles = {WAVEFORM: RowReader(group[WAVEFORM], fast=self.fast), TARGETS: targets}
            self._handles = {pid: handles}  # drop handles inherited from a parent process
        return handles

    # ---------------------------------------------------------------------------------------- access
    def _check_index(self, i: int) -> int:
        if i < -self._len or i >= self._len:
            raise IndexError(f"index {i} out of range for {self._len} windows")
        return i + self._len if i < 0 else i

    def __getitem__(self, index: Any) -> dict[str, torch.Tensor]:
        if not isinstance(index, (int, np.integer)):
            return self.read_batch(index)
        i = self._check_index(int(index))
        if self._preloaded is not None:
            return {k: v[i] for k, v in self._preloaded.items()}
        handles = self._open()
        wave = decode_windows(handles[WAVEFORM].read_row(i), self.dtype)
        out = {WAVEFORM: torch.from_numpy(wave if wave.flags.writeable else wave.copy())}
        for name, source in handles[TARGETS].items():
            value = source[i] if isinstance(source, np.ndarray) else source.read_row(i)
            out[name] = torch.tensor(value) if isinstance(value, np.memmap) else torch.as_tensor(np.asarray(value))
        return out

    def read_batch(self, indices: Any) -> dict[str, torch.Tensor]:
        """Many rows in caller order, one read per array: {"waveform": (B, window_samples), ...}."""
        plan = _row_plan(indices, self._len)
        selection, inverse, _ = plan
        if self._preloaded is not None:
            if isinstance(selection, slice):
                sel = torch.arange(selection.start, selection.stop)
            else:
                sel = torch.from_numpy(selection)
            if inverse is not None:
                sel = sel[torch.from_numpy(inverse)]
            return {k: v[sel.to(v.device)] for k, v in self._preloaded.items()}
        handles = self._open()
        out = {WAVEFORM: torch.from_numpy(decode_windows(_read_rows(handles[WAVEFORM], plan), self.dtype))}
        for name, source in handles[TARGETS].items():
            if isinstance(source, np.ndarray):
                rows = source[selection] if inverse is None else source[selection][inverse]
            else:
                rows = _read_rows(source, plan)
            out[name] = torch.from_numpy(np.ascontiguousarray(rows))
        return out

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """DataLoader's batched fetch: one read for the batch, split into per-sample dicts."""
        batch = self.read_batch(indices)
        return [{k: v[j] for k, v in batch.items()} for j in range(len(indices))]


