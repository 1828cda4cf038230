"""`musicid exp summary`: per grid point, each metric's mean ± std across seeds and where it is heading.

Reads the training runs a sweep tagged (`musicid.tune*`, see tune.py) from MLflow. Per training
stage and grid point: how many seeds ran (and whether deterministically), each metric at the run's
best epoch as mean ± std over seeds, its slope over the last N epochs (default: the stage's
early-stopping patience) averaged over seeds, and a reading of the accuracy and loss slopes:

    still improving   accuracy rising (loss falling or flat)
    converged         both flat
    overfitting       accuracy falling (loss rising or flat), or loss rising with accuracy flat
    decoupled         both rising or both falling: the loss no longer tracks the accuracy
    loss only         loss still falling, accuracy flat

An accuracy slope is flat within `flat` per epoch (absolute, accuracies are in [0, 1]); a loss slope
within `flat` of the loss's mean over the window (relative). Written as Markdown and CSV beside
the record, with a plot per stage and metric of the mean curve of each point (band: ± std).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicid.errors import MusicidError
from musicid.experiments.grid import apply_point, get_dotted, raw_params
from musicid.experiments.tune import TAG_POINT, TAG_SEED, TAG_TUNE, TUNE_REPORTS
from musicid.families.base import Trainer


class SummaryError(MusicidError):
    """The sweep's runs cannot be summarised as asked."""


@dataclass
class Curve:
    """One run's history of one metric: epochs and values."""

    epochs: list[int]
    values: list[float]

    def at(self, epoch: int) -> float:
        if epoch in self.epochs:
            return self.values[self.epochs.index(epoch)]
        return self.values[-1]

    def slope(self, last: int) -> float:
        if len(self.epochs) < 2:
            return math.nan
        x, y = np.asarray(self.epochs[-last:], float), np.asarray(self.values[-last:], float)
        return float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else math.nan


@dataclass
class PointRuns:
    stage: str
    point: str
    seeds: list[int] = field(default_factory=list)
    deterministic: set[str] = field(default_factory=set)
    best_epochs: list[int] = field(default_factory=list)
    curves: dict[str, list[Curve]] = field(default_factory=dict)  # metric → one curve per seed


def trainers_by_stage() -> dict[str, Trainer]:
    from musicid.families import FAMILIES

    return {t.stage: t for family in FAMILIES.values() for t in family.trainers}


def collect(tune: str) -> list[PointRuns]:
    """The sweep's training runs, grouped by (stage, point), every logged per-epoch metric read."""
    import mlflow

    from musicid.tracking.runs import TAG_STAGE, configure, tracking_errors

    configure(must_exist=True)
    trainers = trainers_by_stage()
    client = mlflow.MlflowClient()
    groups: dict[tuple[str, str], PointRuns] = {}
    with tracking_errors("cannot read the sweep's runs"):
        runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string=f"tags.`{TAG_TUNE}` = '{tune}' and attributes.status = 'FINISHED'")
        for run in sorted(runs, key=lambda r: r.info.start_time):
            stage = run.data.tags.get(TAG_STAGE, "")
            if stage not in trainers:
                continue
            group = groups.setdefault((stage, run.data.tags[TAG_POINT]), PointRuns(stage, run.data.tags[TAG_POINT]))
            group.seeds.append(int(run.data.tags.get(TAG_SEED, -1)))
            group.deterministic.add(run.data.params.get("deterministic", "False"))
            last_epoch = 0
            for key in run.data.metrics:
                history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
                if len(history) > 1 or (history and history[0][0] > 0):
                    group.curves.setdefault(key, []).append(Curve([s for s, _ in history], [v for _, v in history]))
                    last_epoch = max(last_epoch, history[-1][0])
            group.best_epochs.append(int(run.data.metrics.get("best_epoch", last_epoch)))
    if not groups:
        raise SummaryError(f"no finished training runs tagged {TAG_TUNE}={tune} in MLflow: "
                           f"did `musicid exp tune` finish (see {TUNE_REPORTS / tune / 'grid.json'})?")
    return sorted(groups.values(), key=lambda g: (g.stage, g.point))


def reading(accuracy_slope: float, loss_slope: float, loss_level: float, flat: float) -> str:
    def sign(value: float, scale: float) -> int:
        return 0 if not math.isfinite(value) or abs(value) <= flat * scale else (1 if value > 0 else -1)

    if not (math.isfinite(accuracy_slope) and math.isfinite(loss_slope)):
        return "too few epochs"
    acc, loss = sign(accuracy_slope, 1.0), sign(loss_slope, max(abs(loss_level), 1e-12))
    if acc == 0 and loss == 0:
        return "converged"
    if acc != 0 and acc == loss:
        return "decoupled"
    if acc > 0:
        return "still improving"
    if acc < 0 or loss > 0:
        return "overfitting"
    return "loss only"


def patience_of(trainer: Trainer, point: str, base: dict[str, Any]) -> int:
    """The stage's early-stopping patience at this grid point (params.yaml with the point's values)."""
    import yaml

    values = dict(item.split("=", 1) for item in point.split()) if point else {}
    raw = apply_point(base, {k: yaml.safe_load(v) for k, v in values.items()})
    try:
        return int(get_dotted(raw, trainer.patience_key))
    except (MusicidError, TypeError, ValueError):
        return 2


def summarise(groups: list[PointRuns], metrics: list[str], last: int | None, flat: float,
              params_path: Path = Path("params.yaml")) -> list[dict[str, Any]]:
    """One row per (stage, point): seeds, best epoch, each metric's mean ± std, slope, and the reading."""
    trainers, base = trainers_by_stage(), raw_params(params_path)
    rows = []
    for group in groups:
        trainer = trainers[group.stage]
        wanted = metrics or [trainer.accuracy, trainer.loss]
        missing = [m for m in wanted if m not in group.curves]
        if missing:
            raise SummaryError(f"{group.stage} runs have no per-epoch metric {', '.join(missing)}; "
                               f"they log: {', '.join(sorted(group.curves))}")
        window = last or patience_of(trainer, group.point, base)
        row: dict[str, Any] = {"stage": group.stage, "point": group.point, "seeds": len(group.seeds),
                               "deterministic": "/".join(sorted(group.deterministic)).lower(),
                               "best_epoch": float(np.mean(group.best_epochs)), "last_n": window}
        slopes, levels = {}, {}
        for metric in dict.fromkeys([*wanted, *({trainer.accuracy, trainer.loss} & set(group.curves))]):
            curves = group.curves[metric]
            at_best = [c.at(e) for c, e in zip(curves, group.best_epochs)]
            slopes[metric] = float(np.nanmean([c.slope(window) for c in curves])) if curves else math.nan
            levels[metric] = float(np.mean([np.mean(c.values[-window:]) for c in curves]))
            if metric in wanted:  # in the order asked (default: accuracy, then loss)
                row[f"{metric} mean"] = float(np.mean(at_best))
                row[f"{metric} std"] = float(np.std(at_best))
                row[f"{metric} slope"] = slopes[metric]
        row["reading"] = reading(slopes.get(trainer.accuracy, math.nan), slopes.get(trainer.loss, math.nan),
                                 levels.get(trainer.loss, 1.0), flat)
        rows.append(row)
    return rows


def metric_names(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k.removesuffix(" mean") for r in rows for k in r if k.endswith(" mean")))


def format_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    metrics = metric_names(rows)
    header = ["stage", "point", "seeds", "best epoch", *(f"{m} (best, mean ± std)" for m in metrics),
              *(f"{m} slope/epoch (last N)" for m in metrics), "reading"]
    body = []
    for r in rows:
        cells = [r["stage"], r["point"] or "(baseline)", f"{r['seeds']}{' det' if r['deterministic'] == 'true' else ''}",
                 f"{r['best_epoch']:.1f}"]
        cells += ["–" if f"{m} mean" not in r else f"{r[f'{m} mean']:.4f} ± {r[f'{m} std']:.4f}" for m in metrics]
        cells += ["–" if f"{m} slope" not in r else f"{r[f'{m} slope']:+.4f} (N={r['last_n']})" for m in metrics]
        cells.append(r["reading"])
        body.append(cells)
    if markdown:
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                         + ["| " + " | ".join(c) + " |" for c in body])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *body)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *body])


def write_reports(tune: str, rows: list[dict[str, Any]], groups: list[PointRuns]) -> list[Path]:
    """summary.md, summary.csv and one curves PNG per stage and metric under reports/tune/<tune>/."""
    from musicid.fsutil import atomic_file

    out = TUNE_REPORTS / tune
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "summary.md", out / "summary.csv"]
    with atomic_file(written[0]) as tmp:
        tmp.write_text(f"# Tuning summary: {tune}\n\n{format_table(rows, markdown=True)}\n\n"
                       "Metric at each run's best epoch (mean ± std over seeds); slope: mean over seeds of the "
                       "least-squares slope over the last N epochs. `det`: every run was deterministic.\n")
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_file(written[1]) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    metrics = metric_names(rows)
    for stage in dict.fromkeys(g.stage for g in groups):
        for metric in metrics:
            path = out / f"{stage}-{metric}.png"
            if plot_curves([g for g in groups if g.stage == stage], metric, path):
                written.append(path)
    return written


def plot_curves(groups: list[PointRuns], metric: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = False
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    for group in groups:
        curves = group.curves.get(metric, [])
        if not curves:
            continue
        epochs = sorted(set().union(*(c.epochs for c in curves)))
        table = np.array([[c.values[c.epochs.index(e)] if e in c.epochs else np.nan for e in epochs] for c in curves])
        mean, std = np.nanmean(table, axis=0), np.nanstd(table, axis=0)
        line, = ax.plot(epochs, mean, marker="o", label=f"{group.point or 'baseline'} ({len(curves)} seeds)")
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        drawn = True
    if drawn:
        ax.set_xlabel("epoch"), ax.set_ylabel(metric), ax.set_title(f"{groups[0].stage}: {metric} per grid point")
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(path)
    plt.close(fig)
    return drawn
