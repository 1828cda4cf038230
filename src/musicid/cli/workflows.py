"""`musicid smoke` and `musicid bench`: workflows above the stages (scratch folders, same functions)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from musicid.cli.base import (
    EVAL_RATIO_OPTION, JSON_OPTION, METADATA_OPTION, PARAMS_OPTION, SOURCE_ARGS, _emit_json, _log_to_stderr, _source, main,
)


def _scratch_base(params_path: str, experiment: str) -> Any:
    """params.yaml for a run in a scratch folder: tracked in `experiment` of the repository's DB, not the folder's."""
    from musicid.config import Params, load_params
    from musicid.workflows.chain import with_updates
    from musicid.tracking import project_root

    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{project_root() / 'mlflow.db'}")
    base = load_params(params_path) if Path(params_path).exists() else Params()
    return with_updates(base, {"tracking": {"experiment": experiment}})


@main.command("smoke")
@SOURCE_ARGS
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto resolves to cuda when available, else cpu, before anything runs.")
@click.option("--out", "out_dir", default="smoke-run", show_default=True, type=click.Path(file_okay=False),
              help="Scratch folder for the run's data, model and reports.")
@click.option("--subset", type=click.IntRange(0), default=40, show_default=True, help="Audio files to use (0 = all).")
@click.option("--query-duration", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True)
@EVAL_RATIO_OPTION
@click.option("--epochs", type=click.IntRange(1), default=3, show_default=True)
@click.option("--steps", type=click.IntRange(1), default=20, show_default=True, help="Training steps per epoch.")
@click.option("--max-queries", type=click.IntRange(0), default=100, show_default=True, help="Planned queries kept (0 = all).")
@click.option("--seed", type=int, default=0, show_default=True)
@METADATA_OPTION
@PARAMS_OPTION
@JSON_OPTION
def smoke(source_and_path: tuple[str, ...], device: str, out_dir: str, subset: int, query_duration: float,
          eval_ratio: float, epochs: int, steps: int, max_queries: int, seed: int, metadata: str | None,
          params_path: str, as_json: bool) -> None:
    """The whole chain on a small subset of [SOURCE] PATH: check → prepare → validate → short train →
    index → evaluate → report, with the same functions as the DVC stages; prints where the reports are.

    Runs are tracked in MLflow (experiment musicid-smoke) and the model is registered as
    musicid-fingerprinter-smoke, apart from the pipeline's own.
    """
    from musicid.device import resolve_device
    from musicid.workflows.chain import run_smoke, smoke_params, with_updates

    _log_to_stderr()
    source_type, path = _source(source_and_path)
    resolved = resolve_device(device).type
    click.echo(f"smoke: device {device} → {resolved}", err=True)
    base = _scratch_base(params_path, "musicid-smoke")
    base = with_updates(base, {"fingerprint.registry": {"model_name": f"{base.fingerprint.registry.model_name}-smoke"}})
    params = smoke_params(base, Path(path).resolve(), source_type, metadata, resolved, query_duration, eval_ratio,
                          epochs, steps, seed, max_queries)
    summary = run_smoke(Path(path).resolve(), source_type, Path(out_dir).resolve(), params, subset, seed)
    if as_json:
        _emit_json(summary)
        return
    click.echo(f"\nsmoke run on {path} ({summary['device']}): {summary['tracks']} tracks, {summary['quarantined']} quarantined, "
               + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()))
    click.echo(f"main top-1 {summary['main_top1']:.3f}, top-5 {summary['main_top5']:.3f} on {summary['queries']} queries "
               f"of {query_duration:g} s")
    for name, report in summary["reports"].items():
        click.echo(f"  {name:<18} {report}")


@main.group()
def bench() -> None:
    """Benchmark harnesses (speed/size benchmarks are scripts in benchmarks/)."""


@bench.command("strategies")
@SOURCE_ARGS
@click.option("--strategies", default="random,silence_aware,high_energy,beat_aware,repeated_section_aware,hybrid",
              show_default=True, help="Comma-separated slice strategies to compare.")
@click.option("--target", type=click.Choice(["training", "queries"]), default="training", show_default=True,
              help="Apply the strategy to the training windows or to the evaluation queries.")
@click.option("--subset", type=click.IntRange(0), default=40, show_default=True, help="Audio files per run (0 = all).")
@click.option("--query-duration", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True)
@click.option("--max-test-queries", type=click.IntRange(0), default=100, show_default=True,
              help="The same planned-query budget for every strategy (0 = all).")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds (split, subset, training).")
@EVAL_RATIO_OPTION
@click.option("--epochs", type=click.IntRange(1), default=3, show_default=True)
@click.option("--steps", type=click.IntRange(1), default=20, show_default=True)
@click.option("--buckets", "buckets_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help='JSON: {"name": ["rel/file.mp3", ...] or {"globs": ["metal/*"], "subset": 20}, ...}.')
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--out", "out_dir", default="bench-strategies", show_default=True, type=click.Path(file_okay=False))
@METADATA_OPTION
@PARAMS_OPTION
@JSON_OPTION
def bench_strategies_command(source_and_path: tuple[str, ...], strategies: str, target: str, subset: int,
                             query_duration: float, max_test_queries: int, seeds: str, eval_ratio: float, epochs: int,
                             steps: int, buckets_path: str | None, device: str, out_dir: str, metadata: str | None,
                             params_path: str, as_json: bool) -> None:
    """A/B slice strategies: train → index → evaluate per strategy and seed on the same queries.

    Writes OUT/report.json and OUT/report.md: every run (queries, top-1, top-5) ranked by top-1,
    then top-5, then queries; per strategy across seeds the mean/min/max/stdev of top-1 and the mean
    top-5; with --buckets, the winner per bucket. Every run is an MLflow run in the experiment
    musicid-bench-strategies.
    """
    from musicid.audio.slicing import STRATEGIES
    from musicid.device import resolve_device
    from musicid.workflows.strategy_bench import bench_strategies, load_buckets
    from musicid.workflows.chain import smoke_params

    _log_to_stderr()
    source_type, path = _source(source_and_path)
    chosen = [s.strip() for s in strategies.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STRATEGIES]
    if unknown or not chosen:
        raise click.BadParameter(f"unknown strategy {', '.join(unknown) or '(none)'}; allowed: {', '.join(STRATEGIES)}",
                                 param_hint="--strategies")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{seeds!r}: expected comma-separated integers", param_hint="--seeds") from None
    if not Path(path).is_dir():
        raise click.BadParameter(f"{path}: the strategy bench needs a folder of audio files", param_hint="PATH")
    try:
        buckets = load_buckets(Path(buckets_path)) if buckets_path else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--buckets") from None
    resolved = resolve_device(device).type
    params = smoke_params(_scratch_base(params_path, "musicid-bench-strategies"), Path(path).resolve(), source_type, metadata, resolved, query_duration, eval_ratio,
                          epochs, steps, seed_list[0], max_test_queries)
    try:
        report = bench_strategies(Path(path).resolve(), Path(out_dir).resolve(), params, chosen, seed_list, subset,
                                  target, buckets)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if as_json:
        _emit_json(report)
        return
    click.echo(f"\n{'strategy':<24}{'runs':>5}{'mean top-1':>12}{'min':>8}{'max':>8}{'stdev':>8}{'mean top-5':>12}")
    for row in report["aggregate"]:
        click.echo(f"{row['strategy']:<24}{row['runs']:>5}{row['mean_top1']:>12.3f}{row['min_top1']:>8.3f}"
                   f"{row['max_top1']:>8.3f}{row['stdev_top1']:>8.3f}{row['mean_topk']:>12.3f}")
    for name, bucket in report["buckets"].items():
        if len(report["buckets"]) > 1:
            click.echo(f"bucket {name}: winner {bucket['winner']}")
    click.echo(f"report: {Path(out_dir) / 'report.md'}, {Path(out_dir) / 'report.json'}")
