"""Production training on the spine: stratified K-fold over everything, folds in sequence, a final run.

The recipe of CoverHunterMPS's production training, for any family: the training data (everything
but the named held-out sets) is dealt into K folds stratified by group (a work, for the work
identifier: each work's performances spread over the folds, so every fold's training part holds
every work and every performance trains in K − 1 folds). Fold 1 trains from scratch at the family's
learning rate; every later fold continues from the previous fold's best weights at `later_lr`,
validated on its own fold; a final run trains on everything, continuing again, and early-stops on a
named held-out test set.

Interrupted anywhere, a rerun resumes: a finished phase is recorded (`<phase>.pt`: best weights and
history) and skipped, and the phase in progress resumes from the training loop's own epoch
checkpoint under `<state>/<phase>/`. Once the final model is written the family removes the state
(`finish`), so a later run with new code trains again.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from musicid.fsutil import atomic_file
from musicid.training.loop import LoopResult, finish, write_history

FINAL = "final"


def stratified_folds(groups: Sequence[str], k: int, seed: int, min_group: int = 2) -> np.ndarray:
    """Fold of each item (0..k-1; -1: trains in every fold): each group's items are dealt round-robin
    over the folds from a seeded shuffle, continuing where the previous group stopped, so folds
    stay the same size and every group keeps items in each fold's training part.

    Groups smaller than `min_group` train in every fold: a work identifier must see every work it
    validates on (2); a fingerprinter validates on recordings and may hold out a lone version (1)."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2 (got {k})")
    rng = np.random.default_rng(seed)
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        by_group[group].append(i)
    fold = np.full(len(groups), -1, dtype=np.int64)
    dealt = 0
    for group in sorted(by_group):
        items = by_group[group]
        if len(items) < min_group:
            continue
        rng.shuffle(items)
        for j, item in enumerate(items):
            fold[item] = (dealt + j) % k
        dealt += len(items)
    return fold


@dataclass(frozen=True)
class Phase:
    name: str  # fold-1 … fold-K, final
    index: int  # 0-based fold (K for the final run)
    lr: float
    epochs: int

    @property
    def is_final(self) -> bool:
        return self.name == FINAL


def plan_phases(k: int, lr: float, later_lr: float, epochs: int, final_epochs: int) -> list[Phase]:
    folds = [Phase(f"fold-{i + 1}", i, lr if i == 0 else later_lr, epochs) for i in range(k)]
    return folds + [Phase(FINAL, k, later_lr, final_epochs)]


@dataclass
class PhaseResult:
    name: str
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    resumed: bool = False  # restored from a finished record, not trained in this process

    @property
    def best(self) -> dict[str, float]:
        return dict(self.history[self.best_epoch - 1]) if self.best_epoch else {}

    @property
    def seconds(self) -> float:
        return float(sum(float(r.get("seconds") or 0) for r in self.history))


TAG_PHASE = "musicid.phase"  # on each phase's nested MLflow run: fold-1 … fold-K, final
TAG_NETWORK = "musicid.network"  # and, where a family trains several networks in one stage, which one
TrainPhase = Callable[[Phase, "dict[str, torch.Tensor] | None", Path, Callable], tuple[torch.nn.Module, LoopResult]]


class _Untracked:
    """What a phase logs to when there is no MLflow run."""

    def log_epoch(self, row: dict[str, float]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float]) -> None:
        pass


def _phase_run(run: Any, phase: Phase, network: str) -> Any:
    """The phase's nested run under `run` (a tracking StageRun), or an inert one."""
    if run is None:
        return contextlib.nullcontext(_Untracked())
    tags = {TAG_PHASE: phase.name} | ({TAG_NETWORK: network} if network else {})
    return run.child(f"{network} {phase.name}" if network else phase.name, tags)


def run_phases(phases: list[Phase], state_dir: Path, train_phase: TrainPhase, run: Any = None, seed: int = 0,
               network: str = "") -> tuple[list[PhaseResult], dict[str, Any]]:
    """Run (or restore) each phase in order, each starting from the previous one's best weights.

    `train_phase(phase, init_state, checkpoint_dir, log_epoch)` trains one phase and returns (the
    model at its best epoch, the loop's result); torch is seeded with `seed` + the phase's index
    first, so a phase draws the same whether earlier phases ran in this process or were restored.
    With `run` (a StageRun) each phase is a nested MLflow run (tagged with `network` when a stage
    trains several), also a phase restored from an earlier, interrupted process (its history logged
    again). Returns every phase's result and the final weights.
    """
    results: list[PhaseResult] = []
    state: dict[str, Any] | None = None
    label = f"{network} " if network else ""
    for phase in phases:
        record = state_dir / f"{phase.name}.pt"
        with _phase_run(run, phase, network) as child:
            if record.is_file():
                saved = torch.load(record, map_location="cpu", weights_only=True)
                state = saved["model"]
                result = PhaseResult(phase.name, int(saved["best_epoch"]), json.loads(saved["history_json"]), resumed=True)
                print(f"{label}{phase.name}: finished earlier (best epoch {result.best_epoch}), restored from {record}")
                for row in result.history:
                    child.log_epoch(row)
            else:
                began = time.perf_counter()
                torch.manual_seed(seed + phase.index)
                model, loop = train_phase(phase, state, state_dir / phase.name, child.log_epoch)
                state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
                result = PhaseResult(phase.name, loop.best_epoch, loop.history)
                state_dir.mkdir(parents=True, exist_ok=True)
                with atomic_file(record) as tmp:
                    torch.save({"model": state, "best_epoch": result.best_epoch,
                                "history_json": json.dumps(result.history), "phase": json.dumps(asdict(phase))}, tmp)
                finish(state_dir / phase.name)
                print(f"{label}{phase.name}: best epoch {result.best_epoch} of {len(result.history)} "
                      f"({time.perf_counter() - began:.0f} s)")
            child.log_metrics({"best_epoch": result.best_epoch})
        results.append(result)
    assert state is not None
    return results, state


def epoch_table(results: list[PhaseResult]) -> list[dict[str, Any]]:
    """Every epoch of every phase in order, with the time elapsed since production training began."""
    rows, elapsed = [], 0.0
    for result in results:
        for row in result.history:
            elapsed += float(row.get("seconds") or 0)
            rows.append({"phase": result.name, **row, "elapsed_s": round(elapsed, 2)})
    return rows


def rank_epochs(rows: list[dict[str, Any]], metrics: list[str], top: int = 5) -> dict[str, list[dict[str, Any]]]:
    """The best `top` epochs (higher is better) by each metric and by their mean over `metrics`."""
    scored = [dict(r) for r in rows if all(r.get(m) not in (None, "") for m in metrics)]
    ranked: dict[str, list[dict[str, Any]]] = {}
    for metric in metrics:
        ranked[metric] = sorted(scored, key=lambda r: -float(r[metric]))[:top]
    if len(metrics) > 1:
        for r in scored:
            r["average"] = float(np.mean([float(r[m]) for m in metrics]))
        ranked["average"] = sorted(scored, key=lambda r: -r["average"])[:top]
    return ranked


def format_best_epochs(ranked: dict[str, list[dict[str, Any]]], metrics: list[str], network: str = "") -> str:
    """The production log report: per held-out set (and by their average), the best epochs across phases."""
    lines = [f"# Best epochs of production training{f' ({network} network)' if network else ''}", ""]
    for by, rows in ranked.items():
        lines += [f"## by {by}", ""]
        if not rows:
            lines += ["(no epoch scored every held-out set)", ""]
            continue
        average = ["average"] if "average" in rows[0] else []
        header = ["rank", "phase", "epoch", *metrics, *average, "elapsed"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for rank, r in enumerate(rows, 1):
            cells = [str(rank), r["phase"], str(int(r["epoch"])), *(f"{float(r[m]):.4f}" for m in [*metrics, *average])]
            lines.append("| " + " | ".join([*cells, f"{float(r['elapsed_s']):.0f} s"]) + " |")
        lines.append("")
    return "\n".join(lines)


def write_reports(results: list[PhaseResult], metrics: list[str], report_dir: Path, selects: str,
                  network: str = "") -> dict[str, Any]:
    """history.csv (every figure of every epoch of every phase), best-epochs.md and curves.png; the
    summary's shared part.

    `metrics` are the held-out figures scored every epoch (higher is better); `selects` is the
    per-epoch figure each phase chose its best epoch by.
    """
    rows = epoch_table(results)
    report_dir.mkdir(parents=True, exist_ok=True)
    first, last = ["phase", "epoch", "train_loss", selects, *metrics], ["lr", "seconds", "elapsed_s"]
    fields = list(dict.fromkeys([*first, *(k for r in rows for k in r if k not in last), *last]))
    write_history(report_dir / "history.csv", rows, fields)
    ranked = rank_epochs(rows, metrics)
    (report_dir / "best-epochs.md").write_text(format_best_epochs(ranked, metrics, network))
    plot_phases(rows, [selects, *metrics], report_dir / "curves.png")
    final = results[-1]
    return {
        "phases": {r.name: {"best_epoch": r.best_epoch, "epochs_run": len(r.history), "seconds": round(r.seconds, 1),
                            **{k: r.best[k] for k in (selects, *metrics) if k in r.best}} for r in results},
        "final": {k: final.best[k] for k in (selects, *metrics) if k in final.best},
        "best_epochs": {k: [{c: r[c] for c in ("phase", "epoch", "elapsed_s", *metrics, "average") if c in r} for r in v]
                        for k, v in ranked.items()},
    }


def plot_phases(rows: list[dict[str, Any]], metrics: list[str], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.4), dpi=110)
    x = np.arange(1, len(rows) + 1)
    for metric in metrics:
        ax.plot(x, [float(r.get(metric) or np.nan) for r in rows], marker=".", label=metric)
    for i, row in enumerate(rows):
        if i == 0 or row["phase"] != rows[i - 1]["phase"]:
            ax.axvline(i + 0.5, color="grey", lw=0.6)
            ax.text(i + 0.7, 0.02, row["phase"], fontsize=7, color="grey")
    ax.set_xlabel("epoch (all phases in order)"), ax.set_ylim(0, 1), ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
