"""`musicid exp`: research-scale experiments over DVC experiments and MLflow (tuning grids, summaries)."""

from __future__ import annotations

from pathlib import Path

import click

from musicid.cli.base import JSON_OPTION, PARAMS_OPTION, _emit_json, main


@main.group("exp")
def exp() -> None:
    """Tuning grids as queued DVC experiments, and their summaries from MLflow (any family's params)."""


def _seeds(value: str) -> list[int]:
    try:
        seeds = [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: a comma-separated list of integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise click.BadParameter(f"{value!r}: at least one seed, none repeated")
    return seeds


@exp.command("tune")
@click.argument("grid_path", metavar="GRID.yaml", type=click.Path(dir_okay=False))
@click.option("--seeds", default="0", show_default=True, help="Seeds per grid point (comma-separated).")
@click.option("-j", "--jobs", type=click.IntRange(1), default=1, show_default=True, help="Queue workers run at once.")
@click.option("--name", default=None, help="Names the sweep and its experiments (default: the grid's `name:` or file stem).")
@click.option("--stage", "stages", multiple=True, help="Reproduce only this stage and what it needs in each "
              "experiment (repeat; default: the whole pipeline), e.g. --stage works-train.")
@click.option("--queue-only", is_flag=True, help="Queue the experiments and stop (run them later with `dvc queue start`, "
              "then tag them with `musicid exp tune GRID.yaml --tag-only`).")
@click.option("--tag-only", is_flag=True, help="Only tag the runs of an already-run sweep.")
@PARAMS_OPTION
def tune(grid_path: str, seeds: str, jobs: int, name: str | None, stages: tuple[str, ...], queue_only: bool,
         tag_only: bool, params_path: str) -> None:
    """Queue one `dvc exp run` per grid point × seed, run the queue with -j workers, and tag every
    MLflow run of the sweep with its grid point and seed (read by `musicid exp summary`).

    GRID.yaml maps params.yaml keys to value lists (`params: {works.train.lr: [0.001, 0.002]}`) and
    may name `seed_keys` (default: the seed of each training stage whose section a key falls in).
    """
    import dataclasses

    from musicid.experiments.grid import load_grid
    from musicid.experiments.tune import (
        Planned, load_record, plan, queue, queue_status, run_queue, save_record, tag_runs,
    )

    grid = load_grid(grid_path, params_path)
    if name:
        grid = dataclasses.replace(grid, name=name)
    seed_list = _seeds(seeds)
    if tag_only:
        planned = [Planned(**p) for p in load_record(grid.name)["experiments"]]
        for item in planned:
            item.status = queue_status({item.name}).get(item.name, item.status)
    else:
        planned = plan(grid, seed_list)
        click.echo(f"exp tune {grid.name}: {len(grid.points())} points × {len(seed_list)} seeds = {len(planned)} "
                   f"experiments (seeds set: {', '.join(grid.seed_keys)})", err=True)
        queue(grid, planned, stages)
        save_record(grid, seed_list, planned)
        if queue_only:
            click.echo(f"queued {len(planned)} experiments: `dvc queue start -j {jobs}`, then "
                       f"`musicid exp tune {grid_path} --tag-only{f' --name {name}' if name else ''}`")
            return
        run_queue(planned, jobs, on_change=lambda items: save_record(grid, seed_list, items))
    tagged = tag_runs(grid.name, planned)
    record = save_record(grid, seed_list, planned)
    failed = [p.name for p in planned if p.status == "Failed"]
    untracked = [p.name for p in planned if p.status == "Success" and not p.runs_tagged]
    click.echo(f"exp tune {grid.name}: {len(planned) - len(failed)} of {len(planned)} experiments succeeded, "
               f"{tagged} MLflow runs tagged → {record}; `musicid exp summary --tune {grid.name}`")
    if untracked:
        click.echo(f"  no new MLflow run (every stage restored from DVC's run cache): {', '.join(untracked)}")
    if failed:
        raise click.ClickException(f"{len(failed)} experiment(s) failed: {', '.join(failed)} "
                                   f"(`dvc queue logs {failed[0]}` shows why)")


@exp.command("summary")
@click.option("--tune", "tune_name", default=None, help="The sweep (default: the newest record under reports/tune).")
@click.option("--metric", "metrics", multiple=True, help="Per-epoch metric to summarise (repeat; default: each "
              "training stage's accuracy and loss, e.g. val_mAP and val_loss for works-train).")
@click.option("--last", type=click.IntRange(2), default=None,
              help="Epochs the slope is fitted over (default: the stage's early-stopping patience).")
@click.option("--flat", type=click.FloatRange(0), default=0.002, show_default=True,
              help="|slope| per epoch read as flat (absolute for accuracies, relative to the level for losses).")
@PARAMS_OPTION
@JSON_OPTION
def summary(tune_name: str | None, metrics: tuple[str, ...], last: int | None, flat: float, params_path: str,
            as_json: bool) -> None:
    """Per grid point: seeds, each metric's mean ± std at the best epoch, its slope over the last N
    epochs and the reading (still improving, converged, overfitting, decoupled); also written to
    reports/tune/<sweep>/summary.{md,csv} with one curves plot per stage and metric."""
    from musicid.experiments.summary import collect, format_table, summarise, write_reports
    from musicid.experiments.tune import latest_tune

    name = tune_name or latest_tune()
    groups = collect(name)
    rows = summarise(groups, list(metrics), last, flat, Path(params_path))
    written = write_reports(name, rows, groups)
    if as_json:
        _emit_json({"tune": name, "rows": rows, "written": [str(p) for p in written]})
        return
    click.echo(f"sweep {name}: {len(rows)} grid point(s)")
    click.echo(format_table(rows))
    click.echo(f"→ {', '.join(map(str, written))}")


@exp.command("best-epochs")
@click.argument("run_ref", metavar="[RUN]", required=False)
@click.option("--top", type=click.IntRange(1), default=5, show_default=True, help="Epochs listed per ranking.")
@JSON_OPTION
def best_epochs(run_ref: str | None, top: int, as_json: bool) -> None:
    """Rank every epoch of a production training run (`<family>-train-prod`) across its folds and
    final run, per held-out test set and by their average: phase, epoch, metric, time elapsed (each
    network on its own where the stage trains several, as pitch-train-prod does).

    RUN is an MLflow run id or a DVC experiment name; default: the newest production run.
    """
    from musicid.experiments.best_epochs import best_epochs as rank
    from musicid.training.kfold import format_best_epochs

    run, by_network, metrics = rank(run_ref, top)
    if as_json:
        _emit_json({"run_id": run.info.run_id, "ranked": by_network.get("", by_network)})
        return
    click.echo(f"run {run.info.run_id} ({run.info.run_name}), held-out sets: {', '.join(metrics)}\n")
    click.echo("\n".join(format_best_epochs(ranked, metrics, network) for network, ranked in by_network.items()))
