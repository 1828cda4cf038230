"""`musicid` command line: one entry point for data, stores and the pipeline stages."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from musicid import __version__
from musicid.errors import MusicidError

PARAMS_OPTION = click.option(
    "--params", "params_path", default="params.yaml", show_default=True,
    type=click.Path(dir_okay=False), help="params.yaml to read.",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
WORKERS_OPTION = click.option(
    "--workers", type=click.IntRange(1), default=None, help="Decoder processes (default: cores, max 4)."
)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


class MusicidGroup(click.Group):
    """Turns MusicidError into `error: <one line>` and exit status 2, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MusicidError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=MusicidGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="musicid")
def main() -> None:
    """musicid: versioned, reproducible music identification.

    The pipeline (dvc.yaml) runs synth → ingest → prepare → shards → train → index → evaluate →
    report; `dvc repro` rebuilds what is stale, and every run is tracked in MLflow. These commands
    inspect sources, validate manifests, look into stores, build indexes for any folder, manage
    the model registry and identify audio clips (with the registry's champion by default).
    """


# --- data ---------------------------------------------------------------------------------------


@main.group()
def data() -> None:
    """Inspect audio sources, check readiness, validate manifests, generate synthetic music."""


SOURCE_TYPES = {"auto": "auto", "folder": "auto", "archive": "auto", "synthetic": "auto", "fma": "fma",
                "mtg_jamendo": "mtg_jamendo"}
SOURCE_ARGS = click.argument("source_and_path", nargs=-1, required=True, metavar="[SOURCE] PATH")
METADATA_OPTION = click.option("--metadata", default=None,
                               help="Metadata file (fma: tracks.csv; mtg_jamendo: a .tsv) [default: ingest.metadata].")
EVAL_RATIO_OPTION = click.option("--eval-ratio", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
                                 show_default=True, help="Share of usable files held out for evaluation queries.")


def _source(source_and_path: tuple[str, ...]) -> tuple[str, str]:
    """`PATH` or `SOURCE PATH` → (ingest source_type, path); SOURCE is one of SOURCE_TYPES."""
    if len(source_and_path) > 2 or (len(source_and_path) == 2 and source_and_path[0] not in SOURCE_TYPES):
        raise click.BadParameter(f"expected [SOURCE] PATH with SOURCE one of {', '.join(SOURCE_TYPES)}; "
                                 f"got {' '.join(source_and_path)}", param_hint="SOURCE PATH")
    source_type = SOURCE_TYPES[source_and_path[0]] if len(source_and_path) == 2 else "auto"
    if not Path(source_and_path[-1]).exists():
        raise click.BadParameter(f"{source_and_path[-1]}: no such file or folder", param_hint="PATH")
    return source_type, source_and_path[-1]


def _scan(source_and_path: tuple[str, ...], params_path: str, workers: int | None, metadata: str | None = None) -> Any:
    from musicid.config import IngestConfig, load_params
    from musicid.data.ingest import CATALOG, scan_source
    from musicid.data.inspect import load_ingested

    source_type, path = _source(source_and_path)
    if (Path(path) / CATALOG).is_file():
        return load_ingested(path)
    cfg = load_params(params_path).ingest if Path(params_path).exists() else IngestConfig()
    update = {"source_type": source_type} | ({"metadata": metadata} if metadata else {})
    if source_type == "auto" and cfg.source_type != "auto" and not metadata:
        update["metadata"] = IngestConfig().metadata  # params.yaml's fma/mtg metadata does not apply to a plain folder
    return scan_source(path, cfg.model_copy(update=update), workers=workers, progress=sys.stderr.isatty())


@data.command("inspect")
@SOURCE_ARGS
@click.option("--query-duration", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
@EVAL_RATIO_OPTION
@METADATA_OPTION
@PARAMS_OPTION
@WORKERS_OPTION
@JSON_OPTION
def data_inspect(source_and_path: tuple[str, ...], query_duration: float, eval_ratio: float, metadata: str | None,
                 params_path: str, workers: int | None, as_json: bool) -> None:
    """Describe PATH (a folder, archive or ingested folder): counts, hours, durations, formats.

    SOURCE (optional): auto, folder, archive, synthetic, fma or mtg_jamendo (see README).
    Also recommends how many tracks to hold out and how many test queries they give.
    """
    from musicid.data.inspect import summarize

    report = summarize(_scan(source_and_path, params_path, workers, metadata), query_duration, eval_ratio)
    if as_json:
        _emit_json(report)
        return
    files, durations = report["files"], report["duration_s"]
    click.echo(f"{source_and_path[-1]}")
    click.echo(f"  audio files   {files['audio']} ({files['decodable']} decodable, {files['quarantined']} quarantined)")
    click.echo(f"  total         {report['total_hours']:.3f} h in {report['works']} work(s)")
    click.echo(f"  durations     min {durations['min']:.1f} s, median {durations['median']:.1f} s, max {durations['max']:.1f} s")
    for label, count in durations["histogram"].items():
        if count:
            click.echo(f"    {label:>10}  {count:5d}  {'#' * min(60, count)}")
    click.echo(f"  formats       {', '.join(f'{k} ×{v}' for k, v in report['formats'].items()) or '-'}")
    click.echo(f"  sample rates  {', '.join(f'{k} Hz ×{v}' for k, v in report['sample_rates'].items()) or '-'}")
    for reason, count in report["quarantine_reasons"].items():
        click.echo(f"  quarantined   {reason} ×{count}")
    advice = report["recommended"]
    click.echo(f"  recommended   {advice['train_tracks']} train / {advice['eval_tracks']} eval tracks, "
               f"{advice['test_queries']} test queries of {query_duration:g} s (eval ratio {eval_ratio:g})")
    verdict = report["readiness"]
    click.echo(f"  ready_for_smoke: {str(verdict['ready_for_smoke']).lower()}")
    for reason in verdict["reasons"]:
        click.echo(f"    - {reason}")


@data.command("inspect-batch")
@click.argument("candidates", nargs=-1, required=True, metavar="NAME=PATH...")
@click.option("--source", "source_type", type=click.Choice(list(SOURCE_TYPES)), default="auto", show_default=True)
@click.option("--query-duration", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
@EVAL_RATIO_OPTION
@PARAMS_OPTION
@WORKERS_OPTION
@JSON_OPTION
def data_inspect_batch(candidates: tuple[str, ...], source_type: str, query_duration: float, eval_ratio: float,
                       params_path: str, workers: int | None, as_json: bool) -> None:
    """Inspect several candidate folders side by side (NAME=PATH each): size, durations, readiness."""
    from musicid.data.inspect import summarize

    reports = {}
    for candidate in candidates:
        name, sep, path = candidate.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"{candidate!r}: expected NAME=PATH", param_hint="NAME=PATH")
        reports[name] = summarize(_scan((source_type, path), params_path, workers), query_duration, eval_ratio)
    if as_json:
        _emit_json(reports)
        return
    header = f"{'name':<16}{'files':>7}{'quar.':>7}{'hours':>8}{'median s':>10}{'eval':>6}{'queries':>9}  ready"
    click.echo(header)
    for name, report in reports.items():
        click.echo(
            f"{name:<16}{report['files']['decodable']:>7}{report['files']['quarantined']:>7}{report['total_hours']:>8.2f}"
            f"{report['duration_s']['median']:>10.1f}{report['recommended']['eval_tracks']:>6}"
            f"{report['recommended']['test_queries']:>9}  {str(report['readiness']['ready_for_smoke']).lower()}"
        )


@data.command("check-ready")
@SOURCE_ARGS
@click.option("--query-duration", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Seconds a file needs to yield one evaluation query.")
@EVAL_RATIO_OPTION
@METADATA_OPTION
@PARAMS_OPTION
@WORKERS_OPTION
@JSON_OPTION
def data_check_ready(source_and_path: tuple[str, ...], query_duration: float, eval_ratio: float, metadata: str | None,
                     params_path: str, workers: int | None, as_json: bool) -> None:
    """Exit 0 if [SOURCE] PATH has ≥2 decodable files and ≥2 files as long as a query; else exit 1 with why."""
    from musicid.data.inspect import readiness, recommend

    scan = _scan(source_and_path, params_path, workers, metadata)
    durations = [t["duration_s"] for t in scan.tracks]
    verdict = readiness(durations, query_duration) | {"recommended": recommend(durations, query_duration, eval_ratio)}
    if as_json:
        _emit_json(verdict)
    elif verdict["ready_for_smoke"]:
        click.echo(f"ready_for_smoke: {verdict['decodable_files']} decodable, {verdict['files_long_enough']} ≥ {query_duration:g} s; "
                   f"{verdict['recommended']['eval_tracks']} eval tracks at eval ratio {eval_ratio:g}")
    else:
        click.echo("not ready: " + "; ".join(verdict["reasons"]), err=True)
    sys.exit(0 if verdict["ready_for_smoke"] else 1)


@data.command("prepare")
@SOURCE_ARGS
@click.option("--output-root", required=True, type=click.Path(file_okay=False),
              help="Writes OUTPUT_ROOT/ingested (audio, catalog, quarantine) and OUTPUT_ROOT/manifests.")
@EVAL_RATIO_OPTION
@click.option("--val-ratio", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True)
@click.option("--query-duration", type=click.FloatRange(min=0, min_open=True), required=True, help="Query length (s).")
@click.option("--query-stride", type=click.FloatRange(min=0, min_open=True), default=None,
              help="A query every STRIDE s along each eval track [default: the query duration, no overlap].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--split-by", type=click.Choice(["work", "source"]), default="work", show_default=True)
@METADATA_OPTION
@PARAMS_OPTION
@WORKERS_OPTION
@JSON_OPTION
def data_prepare(source_and_path: tuple[str, ...], output_root: str, eval_ratio: float, val_ratio: float,
                 query_duration: float, query_stride: float | None, seed: int, split_by: str, metadata: str | None,
                 params_path: str, workers: int | None, as_json: bool) -> None:
    """Ingest [SOURCE] PATH and write leakage-checked train/val/test/refs/queries manifests.

    The same functions as the `ingest` and `prepare` stages: bad files are quarantined with their
    reason, splits are by work (or the catalog's own with --split-by source). Check the result
    with `musicid data validate OUTPUT_ROOT/manifests`.
    """
    from musicid.config import IngestConfig, PrepareConfig, load_params
    from musicid.data.ingest import ingest
    from musicid.data.splits import prepare

    source_type, path = _source(source_and_path)
    base = load_params(params_path).ingest if Path(params_path).exists() else IngestConfig()
    ingest_cfg = base.model_copy(update={"source_type": source_type, "query_duration_s": query_duration}
                                 | ({"metadata": metadata} if metadata else {}))
    try:
        prepare_cfg = PrepareConfig(seed=seed, val_fraction=val_ratio, test_fraction=eval_ratio, split_by=split_by,
                                    query_lengths_s=[query_duration], query_stride_s=query_stride or query_duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc).splitlines()[-1]) from None
    root = Path(output_root)
    scan = ingest(path, root / "ingested", ingest_cfg, workers=workers, progress=sys.stderr.isatty())
    summary = prepare(root / "ingested" / "catalog.json", root / "manifests", prepare_cfg)
    summary |= {"quarantined": len(scan.quarantined), "output_root": str(root)}
    if as_json:
        _emit_json(summary)
        return
    click.echo(f"{len(scan.tracks)} tracks ingested, {len(scan.quarantined)} quarantined → {root / 'ingested'}")
    click.echo("tracks " + ", ".join(f"{k} {v}" for k, v in summary["tracks"].items())
               + f"; {summary['queries']} queries of {query_duration:g} s every {query_stride or query_duration:g} s → {root / 'manifests'}")


@data.command("validate")
@click.argument("manifest_dir", type=click.Path())
@JSON_OPTION
def data_validate(manifest_dir: str, as_json: bool) -> None:
    """Check a manifest folder's structure and that no track, work or audio crosses splits."""
    from musicid.data.splits import validate_manifests

    report = validate_manifests(manifest_dir)
    if as_json:
        _emit_json(report)
    elif report["ok"]:
        click.echo("ok: " + ", ".join(f"{k} {v}" for k, v in report["counts"].items()))
    else:
        for problem in report["problems"]:
            click.echo(f"problem: {problem}", err=True)
    sys.exit(0 if report["ok"] else 1)


@data.command("synth")
@click.argument("out", type=click.Path(dir_okay=False))
@PARAMS_OPTION
@click.option("--seed", type=int, default=None, help="Override synth.seed.")
@click.option("--n-works", type=click.IntRange(1), default=None, help="Override synth.n_works.")
@click.option("--versions", type=click.IntRange(1), default=None, help="Override synth.versions_per_work.")
def data_synth(out: str, params_path: str, seed: int | None, n_works: int | None, versions: int | None) -> None:
    """Write a synthetic music archive (works × versions, FLAC/OGG/WAV + metadata.csv) to OUT."""
    from musicid.config import SynthConfig, load_params
    from musicid.data.synth import build_archive

    cfg = load_params(params_path).synth if Path(params_path).exists() else SynthConfig()
    overrides = {"seed": seed, "n_works": n_works, "versions_per_work": versions}
    cfg = cfg.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    rows = build_archive(cfg, Path(out))
    click.echo(f"wrote {out}: {len(rows)} tracks, {sum(float(r['duration']) for r in rows) / 3600:.2f} h")


def _scratch_base(params_path: str, experiment: str) -> Any:
    """params.yaml for a run in a scratch folder: tracked in `experiment` of the repository's DB, not the folder's."""
    from musicid.config import Params, load_params
    from musicid.stages.chain import with_updates
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
    from musicid.stages.chain import run_smoke, smoke_params, with_updates

    _log_to_stderr()
    source_type, path = _source(source_and_path)
    resolved = resolve_device(device).type
    click.echo(f"smoke: device {device} → {resolved}", err=True)
    base = _scratch_base(params_path, "musicid-smoke")
    base = with_updates(base, {"registry": {"model_name": f"{base.registry.model_name}-smoke"}})
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
    from musicid.evaluate.strategy_bench import bench_strategies, load_buckets
    from musicid.stages.chain import smoke_params

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


# --- store --------------------------------------------------------------------------------------


@main.group()
def store() -> None:
    """Look into Zarr window stores written by the shards stage."""


@store.command("info")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@JSON_OPTION
def store_info(path: str, as_json: bool) -> None:
    """Rows, window size, dtype, compressor, files and bytes of a store."""
    from musicid.store import store_summary

    summary = store_summary(path)
    if as_json:
        _emit_json(summary)
    else:
        for key, value in summary.items():
            click.echo(f"{key:>16}  {value}")


# --- index and identify -------------------------------------------------------------------------

DEFAULT_MODEL = "models/fingerprinter"
DEFAULT_INDEX = "data/index"
MODEL_URI_ENV = "MUSICID_MODEL_URI"


def default_model_uri(params_path: str) -> tuple[str, str]:
    """(champion URI, candidate alias) of the registered fingerprinter named in params.yaml."""
    from musicid.config import RegistryConfig, load_params

    cfg = load_params(params_path).registry if Path(params_path).exists() else RegistryConfig()
    return f"models:/{cfg.model_name}@{cfg.champion_alias}", cfg.candidate_alias


@contextlib.contextmanager
def resolved_model(value: str | None, params_path: str) -> Iterator[tuple[Path, Path | None, str]]:
    """(model folder, bundled index or None, description) for --model / $MUSICID_MODEL_URI / the champion.

    A `models:/` URI is downloaded from the MLflow registry (with its bundled index); anything
    else is a model folder. Only the default champion falls back to the newest candidate.
    """
    champion, candidate = default_model_uri(params_path)
    uri = value or os.environ.get(MODEL_URI_ENV) or champion
    if not uri.startswith("models:/"):
        yield Path(uri), None, uri
        return
    from musicid.tracking import fetch

    fetched = fetch(uri, fallback_alias=candidate if uri == champion and not value else None)
    if fetched.warning:
        click.echo(fetched.warning, err=True)
    try:
        version = fetched.version
        yield fetched.model_dir, fetched.index_dir, f"{uri} (version {version.version}, signature {version.signature})"
    finally:
        fetched.cleanup()


def _log_to_stderr() -> None:
    """Show musicid's progress notes and warnings (resuming, skipped files) as plain stderr lines."""
    import logging

    logger = logging.getLogger("musicid")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


@main.group("index")
def index_group() -> None:
    """Build the reference index (FAISS) that `musicid identify` searches."""


@index_group.command("build")
@click.argument("audio_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Index folder to write.")
@click.option("--model", "model", default=None,
              help=f"Model folder or registry URI [default: ${MODEL_URI_ENV}, else the registry champion].")
@PARAMS_OPTION
@click.option("--kind", type=click.Choice(["flat", "ivf_flat", "ivf_pq"]), default=None,
              help="Override index.kind (flat = exact inner product).")
def index_build(audio_dir: str, out_dir: str, model: str, params_path: str, kind: str | None) -> None:
    """Embed every audio file under AUDIO_DIR (named by relative path) into an index at --out.

    Index settings come from params.yaml's `index` section (defaults without it). An interrupted
    build resumes from `<out>.partial/` when rerun with the same model and files.
    """
    import time

    from musicid.config import IndexConfig, load_params
    from musicid.index import build_index, index_refs_from_folder
    from musicid.models.io import load_model

    _log_to_stderr()
    cfg = load_params(params_path).index if Path(params_path).exists() else IndexConfig()
    if kind is not None:
        cfg = cfg.model_copy(update={"kind": kind})
    refs = index_refs_from_folder(audio_dir)
    with resolved_model(model, params_path) as (model_dir, _, described):
        click.echo(f"model: {described}", err=True)
        loaded = load_model(model_dir, cfg.device)
    started = time.perf_counter()
    meta = build_index(refs, loaded, out_dir, cfg, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - started
    speed = meta["hours"] * 3600 / seconds if seconds > 0 else float("inf")
    click.echo(
        f"index ({meta['kind']}): {meta['n_refs']} refs, {meta['n_vectors']} vectors, {meta['hours']:.3f} h "
        f"in {seconds:.1f} s ({speed:.0f}× real time) → {out_dir}"
    )
    for skipped in meta.get("skipped", []):
        click.echo(f"  skipped {skipped['ref']}: {skipped['reason']}: {skipped['detail']}")


@main.command("identify")
@click.argument("queries", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--index", "index_dir", default=None, type=click.Path(file_okay=False),
              help=f"Index folder [default: the index registered with the model, else {DEFAULT_INDEX}].")
@click.option("--model", "model", default=None,
              help=f"Model folder ({DEFAULT_MODEL}) or registry URI (models:/NAME@ALIAS, models:/NAME/VERSION) "
                   f"[default: ${MODEL_URI_ENV}, else models:/musicid-fingerprinter@champion].")
@click.option("--top", type=click.IntRange(1), default=None, help="Matches per query [default: identify.top, 5].")
@PARAMS_OPTION
@click.option("--json", "as_json", is_flag=True,
              help='One JSON line per query: {"query", "matches": [{"ref", "score", "offset_s"}]} or "error".')
def identify(queries: tuple[str, ...], index_dir: str, model: str, top: int | None, params_path: str,
             as_json: bool) -> None:
    """Identify each QUERY audio file: best matching references, score and offset, best first.

    The model comes from the MLflow registry by default (alias champion, or the newest candidate
    with a warning while there is no champion); --model or $MUSICID_MODEL_URI switch it without a
    code change. The model is self-checked at load and an index made by another model is refused.
    The model and index are loaded once for all queries. A query that cannot be decoded is
    reported (with --json: an "error" field and no matches) and the others are still answered.
    score is the offset-consistent similarity per query segment (1.0 = perfect); offset_s is where
    in the reference the query starts.

    Exit status: 0 when every query was answered, 1 when any query could not be decoded, 2 when
    the model, registry or index cannot be used.
    """
    from musicid.config import IdentifyConfig, load_params
    from musicid.identify import Identifier

    _log_to_stderr()
    cfg = load_params(params_path).identify if Path(params_path).exists() else IdentifyConfig()
    with resolved_model(model, params_path) as (model_dir, bundled_index, described):
        index_path = index_dir or bundled_index or DEFAULT_INDEX
        click.echo(f"model: {described}; index: {index_dir or ('registered with the model' if bundled_index else index_path)}",
                   err=True)
        identifier = Identifier.load(model_dir, index_path, cfg)
    failed = 0
    for query in queries:
        result = identifier.identify_path(query, top=top)
        failed += "error" in result
        if as_json:
            click.echo(json.dumps(result))
            continue
        click.echo(query)
        if "error" in result:
            click.echo(f"  error: {result['error']}")
        elif not result["matches"]:
            click.echo("  no match")
        for rank, match in enumerate(result["matches"], 1):
            click.echo(f"  {rank:2d}. {match['score']:.3f}  {match['ref']}  @ {match['offset_s']:.2f} s")
    sys.exit(1 if failed else 0)


# --- registry -----------------------------------------------------------------------------------


def _registry_cfg(params_path: str) -> Any:
    from musicid.config import RegistryConfig, load_params

    return load_params(params_path).registry if Path(params_path).exists() else RegistryConfig()


@main.group()
def registry() -> None:
    """MLflow model registry: list versions with their metrics, promote through the release gates.

    Runs and models live in $MLFLOW_TRACKING_URI, else sqlite:///<repo>/mlflow.db. The `report`
    stage registers each new model with alias candidate; `musicid identify` uses alias champion.
    """


@registry.command("list")
@PARAMS_OPTION
@click.option("--name", default=None, help="Registered model [default: registry.model_name].")
@click.option("--metrics", "all_metrics", is_flag=True, help="Show every recorded metric, not just the gate metrics.")
@JSON_OPTION
def registry_list(params_path: str, name: str | None, all_metrics: bool, as_json: bool) -> None:
    """Versions, aliases, signatures and key metrics (gate metrics marked pass/FAIL)."""
    import datetime

    from musicid.tracking import check_gates, list_versions

    cfg = _registry_cfg(params_path)
    name = name or cfg.model_name
    versions = list_versions(name)
    if as_json:
        _emit_json([v.as_dict() for v in versions])
        return
    if not versions:
        click.echo(f"{name}: no versions registered yet (`dvc repro` registers one)")
        return
    gate_names = [*cfg.gates.min, *cfg.gates.max]
    click.echo(f"{name} (gates from {params_path}: "
               + ", ".join(r.describe().split(" ", 1)[0] + (" >= " if r.kind == "min" else " <= ") + f"{r.threshold:g}"
                           for r in check_gates({}, cfg.gates)) + ")")
    for version in reversed(versions):
        created = datetime.datetime.fromtimestamp(version.created_ms / 1000).strftime("%Y-%m-%d %H:%M")
        aliases = " ".join(f"@{a}" for a in sorted(version.aliases)) or "-"
        results = check_gates(version.metrics, cfg.gates)
        verdict = "gates pass" if all(r.passed for r in results) else "gates FAIL"
        click.echo(f"  v{version.version:<4} {aliases:<22} {version.signature}  {created}  {verdict}"
                   + (f"  exp {version.tags.get('musicid.dvc_exp')}" if version.tags.get("musicid.dvc_exp") else ""))
        shown = version.metrics if all_metrics else {k: version.metrics[k] for k in ["main_top1", *gate_names] if k in version.metrics}
        click.echo("        " + ", ".join(f"{k} {v:g}" for k, v in shown.items()))


@registry.command("promote")
@click.argument("version")
@click.option("--alias", default=None, help="Alias to set [default: registry.champion_alias, champion].")
@PARAMS_OPTION
@click.option("--name", default=None, help="Registered model [default: registry.model_name].")
def registry_promote(version: str, alias: str | None, params_path: str, name: str | None) -> None:
    """Point --alias at VERSION (a number or an alias such as candidate) if it passes the gates.

    The gates are params.yaml's registry.gates (min/max per metric); a version that fails one is
    refused with the failing figure and the alias is left as it was.
    """
    from musicid.tracking import promote

    cfg = _registry_cfg(params_path)
    name, alias = name or cfg.model_name, alias or cfg.champion_alias
    info, results = promote(name, version, alias, cfg.gates)
    for result in results:
        click.echo(f"  pass  {result.describe()}")
    click.echo(f"{name} version {info.version} is now @{alias} (signature {info.signature})")


@registry.command("register")
@PARAMS_OPTION
def registry_register(params_path: str) -> None:
    """Register models/fingerprinter + data/index with their evaluation (what the report stage does)."""
    from musicid.config import load_params
    from musicid.stages import register_workspace

    register_workspace(load_params(params_path))


# --- reports ------------------------------------------------------------------------------------


@main.command("metrics")
@click.argument("path", default="reports/eval/metrics.json", type=click.Path(exists=True, dir_okay=False))
def metrics_table(path: str) -> None:
    """Print the hit-rate table (top-1 per condition × query length) of an evaluation report."""
    from musicid.fsutil import read_json
    from musicid.stages import format_hit_table

    click.echo(format_hit_table(read_json(path)))


# --- pipeline stages ----------------------------------------------------------------------------


def _stage_command(name: str, run: Callable[..., None]) -> click.Command:
    @PARAMS_OPTION
    @WORKERS_OPTION
    def command(params_path: str, workers: int | None) -> None:
        from musicid.config import load_params

        _log_to_stderr()
        run(load_params(params_path), workers=workers)

    command.__doc__ = f"Run the `{name}` stage (what dvc.yaml calls; prefer `dvc repro {name}`)."
    return click.command(name)(command)


@main.group()
def stage() -> None:
    """Pipeline stages as dvc.yaml runs them. Use `dvc repro` to run only what is stale."""


def _register_stages() -> None:
    from musicid.stages import STAGES

    for name, run in STAGES.items():
        stage.add_command(_stage_command(name, run))


_register_stages()

if __name__ == "__main__":
    main()
