"""One epoch loop for every family: steps, validation, best-epoch choice, checkpoints, early stop.

A family supplies `step()` (one optimisation step; returns the loss; it steps its own optimiser and
per-step schedule), `validate(epoch)` (the epoch's validation figures) and `better(row, best)`
(whether this epoch beats the best so far). The loop checkpoints model, optimiser, scheduler,
generator and RNG state after every epoch under a key of (configs, data version), so an
interrupted run resumes where it stopped and finishes with the same weights as an uninterrupted
one; the checkpoint is removed once the best model is returned. Under DDP (`distributed.py`) every
rank runs this loop in step and rank 0 alone validates, logs and checkpoints.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from musicid.fsutil import atomic_file
from musicid.training.distributed import current_world


def run_key(*parts: Any) -> str:
    """Identifies a training run (configs + data version): same key ⇒ a checkpoint can be resumed."""
    payload = json.dumps([p.model_dump() if hasattr(p, "model_dump") else p for p in parts], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def store_version(store: Path) -> str:
    """A cheap content version of a Zarr store: hash of its file names, sizes and index bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(store).rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(store)}:{path.stat().st_size}".encode())
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 4096))
            digest.update(handle.read())
    return digest.hexdigest()[:16]


def write_history(path: Path, history: list[dict[str, float]], fields: Sequence[str] | None = None) -> None:
    fields = list(fields or (history[0].keys() if history else ["epoch"]))
    with atomic_file(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


@dataclass
class LoopResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    resumed_from_epoch: int = 0
    stopped_early: bool = False

    @property
    def best(self) -> dict[str, float]:
        return dict(self.history[self.best_epoch - 1]) if self.best_epoch else {}


@dataclass
class TrainResult:
    """What a family's training returns: the loop's record plus the saved model's signature."""

    signature: str
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best: dict[str, float] = field(default_factory=dict)
    resumed_from_epoch: int = 0
    stopped_early: bool = False

    @classmethod
    def from_loop(cls, loop: LoopResult) -> "TrainResult":
        return cls("", loop.history, loop.best_epoch, loop.best, loop.resumed_from_epoch, loop.stopped_early)


def fit(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, gen: torch.Generator, *,
    epochs: int, steps_per_epoch: int, patience: int, checkpoint_dir: Path,
    step: Callable[[], float], validate: Callable[[int], dict[str, float]],
    better: Callable[[dict[str, float], dict[str, float] | None], bool],
    end_epoch: Callable[[int], None] | None = None, describe: Callable[[dict[str, float]], str] | None = None,
    log_epoch: Callable[[dict[str, float]], None] | None = None, on_epoch: Callable[[int], None] | None = None,
    progress: bool = True, label: str = "train", monitor: str = "validation",
    extra_modules: dict[str, torch.nn.Module] | None = None,
) -> LoopResult:
    """Run epochs of `step()`, validate, keep the best weights; resume from `checkpoint_dir/last.pt`.

    `end_epoch(epoch)` runs after the steps (e.g. a per-epoch lr decay); `log_epoch(row)` gets
    every history row, also those restored when resuming (e.g. for MLflow); `on_epoch(epoch)` runs
    after the checkpoint is written (tests interrupt there). `extra_modules` are trained alongside
    the model but not part of it (e.g. a loss's learned centres): checkpointed and restored with it.

    Under DDP (training/distributed.py) every rank steps; rank 0 alone validates (the others get its
    row), logs, prints and writes the checkpoint, which holds every rank's torch RNG state.
    """
    extra_modules = extra_modules or {}
    world = current_world()
    progress, log_epoch = progress and world.main, log_epoch if world.main else None
    checkpoint = checkpoint_dir / "last.pt"
    result = LoopResult()
    start_epoch = 1
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        for name, module in extra_modules.items():
            module.load_state_dict(state["extra"][name])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng_ranks"][world.rank] if world.distributed else state["torch_rng"])
        result.best_state = state["best_model"]
        result.history = [dict(row) for row in json.loads(state["history_json"])]
        result.best_epoch = int(state["best_epoch"])
        start_epoch = int(state["epoch"]) + 1
        result.resumed_from_epoch = start_epoch - 1
        if world.main:
            print(f"{label}: resuming from epoch {start_epoch - 1} ({checkpoint})")
        for row in result.history if log_epoch is not None else []:
            log_epoch(row)
    model.train()
    for epoch in range(start_epoch, epochs + 1):
        began, losses = time.perf_counter(), []
        bar = tqdm(range(steps_per_epoch), desc=f"{label} epoch {epoch}/{epochs}", disable=not progress, unit="step")
        for _ in bar:
            losses.append(float(step()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        lr = optimizer.param_groups[0]["lr"]
        if end_epoch is not None:
            end_epoch(epoch)
        train_loss = float(np.mean(world.gather_objects(float(np.mean(losses)))))
        row = world.broadcast({"epoch": epoch, "train_loss": train_loss, **validate(epoch), "lr": lr,
                               "seconds": round(time.perf_counter() - began, 2)} if world.main else None)
        model.train()
        result.history.append(row)
        if log_epoch is not None:
            log_epoch(row)
        if world.main:
            print(f"{label}: epoch {epoch}: " + (describe(row) if describe else f"loss {row['train_loss']:.3f}"))
        if better(row, result.history[result.best_epoch - 1] if result.best_epoch else None):
            result.best_epoch = epoch
            result.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        rng_states = world.gather_objects(torch.get_rng_state())
        if world.main:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            with atomic_file(checkpoint) as tmp:
                torch.save({
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "extra": {name: module.state_dict() for name, module in extra_modules.items()},
                    "scheduler": scheduler.state_dict() if scheduler is not None else {},
                    "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "best_model": result.best_state,
                    "history_json": json.dumps(result.history), "best_epoch": result.best_epoch, "epoch": epoch,
                    **({"torch_rng_ranks": rng_states} if world.distributed else {}),
                }, tmp)
        world.barrier()  # no rank runs ahead of a checkpoint it could be resumed from
        if on_epoch is not None:
            on_epoch(epoch)
        if epoch - result.best_epoch >= patience:
            result.stopped_early = True
            if world.main:
                print(f"{label}: early stop after epoch {epoch}: no {monitor} gain for {patience} epochs")
            break
    assert result.best_state is not None
    model.load_state_dict(result.best_state)
    return result


def finish(checkpoint_dir: Path) -> None:
    """Drop a finished run's checkpoint (the model folder is the result now); rank 0's to drop under DDP."""
    if current_world().main:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
