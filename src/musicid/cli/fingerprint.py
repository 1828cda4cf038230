"""Fingerprint commands: `musicid index build`, `musicid identify`, `musicid metrics`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from musicid.cli.base import (
    MODEL_URI_ENV, PARAMS_OPTION, _log_to_stderr, answer_queries, load_params_or_defaults, main, resolved_model,
)


DEFAULT_MODEL = "models/fingerprint"
DEFAULT_INDEX = "data/index/fingerprint"


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
              help="Override fingerprint.index.kind (flat = exact inner product).")
@click.option("--dask", "cluster", default=None, metavar="ADDRESS|local:N",
              help="Embed on Dask workers: a scheduler address (tcp://host:8786) or local:N (N worker processes "
                   "started here). Same index as without. Default: fingerprint.index.engine / dask_address.")
def index_build(audio_dir: str, out_dir: str, model: str, params_path: str, kind: str | None, cluster: str | None) -> None:
    """Embed every audio file under AUDIO_DIR (named by relative path) into an index at --out.

    Index settings come from params.yaml's `fingerprint.index` section (defaults without it). An interrupted
    build resumes from `<out>.partial/` when rerun with the same model and files. A second build
    into the same folder while one runs stops at once, naming the running one. With --dask, workers
    open the audio and model folders at the driver's absolute paths (one machine or a shared filesystem).
    """
    import time

    from musicid.families.fingerprint.io import load_model
    from musicid.index import build_index, index_refs_from_folder

    from musicid.fsutil import exclusive_writer

    _log_to_stderr()
    with exclusive_writer(out_dir, f"another `musicid index build` is writing {out_dir}"):
        cfg = load_params_or_defaults(params_path).fingerprint.index
        if kind is not None:
            cfg = cfg.model_copy(update={"kind": kind})
        if cluster is None and cfg.engine == "dask":
            from musicid.index.distributed import cluster_of

            cluster = cluster_of(cfg)
        refs = index_refs_from_folder(audio_dir)
        with resolved_model(model, params_path) as (model_dir, _, described, _settings):
            click.echo(f"model: {described}" + (f"; embedding on Dask ({cluster})" if cluster else ""), err=True)
            loaded = load_model(model_dir, cfg.device)
            if cluster:  # the workers load the model from model_dir, so the build runs while it exists
                from musicid.index.distributed import build_index_distributed

                started = time.perf_counter()
                meta = build_index_distributed(refs, loaded, model_dir, load_model, out_dir, cfg, cluster,
                                               progress=sys.stderr.isatty())
        if not cluster:
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


@index_group.command("doctor")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--queries", "queries_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of labelled query clips.")
@click.option("--truth", "truth_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="truth.json: query file name → {ref, start_s, condition, length_s} (../shared/bench/make_queries.py).")
@click.option("--model", "model", default=None, help="Model folder or registry URI [default: as `identify`].")
@click.option("--target-fpr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Open-set calibration target [default: fingerprint.evaluate.target_fpr].")
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False), help="Write the full report as JSON.")
@click.option("--show", type=click.IntRange(1), default=10, help="References listed in the hub table.")
@PARAMS_OPTION
def index_doctor(index_dir: str, queries_dir: str, truth_path: str, model: str | None, target_fpr: float | None,
                 out_path: str | None, show: int, params_path: str) -> None:
    """Which references take the wrong answers (hubs) and why; the open-set threshold on these queries.

    Every query is answered against INDEX_DIR and again as if its own track were not indexed, so
    the same run gives the hub table (wrong top-1 answers taken per reference, with each one's
    density and share of repetitive segments) and the threshold at the target false-positive rate
    with TPR and FPR per query length.
    """
    from musicid.families.fingerprint.doctor import answer_queries as answer_labelled, diagnose, format_report, reference_profiles
    from musicid.families.fingerprint.identifier import Identifier
    from musicid.fsutil import read_json, write_json

    _log_to_stderr()
    params = load_params_or_defaults(params_path)
    truth = read_json(truth_path)
    queries = [(Path(queries_dir) / name, item) for name, item in sorted(truth.items()) if (Path(queries_dir) / name).is_file()]
    if not queries:
        raise click.UsageError(f"none of the {len(truth)} queries in {truth_path} is in {queries_dir}")
    with resolved_model(model, params_path) as (model_dir, _, described, _settings):
        click.echo(f"model: {described}; {len(queries)} labelled queries", err=True)
        identifier = Identifier.load(model_dir, index_dir, params.fingerprint.identify.model_copy(update={"min_score": None}))
    progress = sys.stderr.isatty()
    rows = answer_labelled(identifier, queries, progress)
    report = diagnose(rows, reference_profiles(identifier.index, progress),
                      target_fpr or params.fingerprint.evaluate.target_fpr)
    click.echo(format_report(report, show))
    if out_path:
        write_json(out_path, report | {"rows": rows})


def open_set_source(flag: float | None, param: float | None, settings: dict, model_dir: Path,
                    workspace_index: bool) -> tuple[float | None, dict | None, str]:
    """(flat min score, calibrated curve, where from): --min-score, params, the registered bundle, the workspace."""
    from musicid.families.fingerprint.stages import calibrated_open_set
    from musicid.fsutil import read_json

    if flag is not None:
        return flag, None, f"min score {flag:g} (--min-score)"
    if param is not None:
        return param, None, f"min score {param:g} (fingerprint.identify.min_score)"
    if settings.get("open_set"):
        return None, settings["open_set"], "threshold per query length, calibrated for the model (registered with it)"
    if workspace_index and (model_dir / "config.json").is_file():
        curve = calibrated_open_set(read_json(model_dir / "config.json")["signature"])
        if curve is not None:
            return None, curve, "threshold per query length, calibrated by fingerprint-evaluate for this model and index"
    return None, None, 'no calibrated threshold for this model and index (answers carry no "matched"; --min-score sets one)'


@main.command("identify")
@click.argument("queries", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--index", "index_dir", default=None, type=click.Path(file_okay=False),
              help=f"Index folder [default: the index registered with the model, else {DEFAULT_INDEX}].")
@click.option("--model", "model", default=None,
              help=f"Model folder ({DEFAULT_MODEL}) or registry URI (models:/NAME@ALIAS, models:/NAME/VERSION) "
                   f"[default: ${MODEL_URI_ENV}, else models:/musicid-fingerprinter@champion].")
@click.option("--top", type=click.IntRange(1), default=None, help="Matches per query [default: fingerprint.identify.top, 5].")
@click.option("--min-score", "min_score", type=float, default=None,
              help="Open-set threshold: a best match below it answers \"matched\": false [default: "
                   "fingerprint.identify.min_score, else the threshold calibrated for the model by fingerprint-evaluate].")
@PARAMS_OPTION
@click.option("--json", "as_json", is_flag=True,
              help='One JSON line per query: {"query", "matches": [{"ref", "score", "offset_s"}]} or "error".')
def identify(queries: tuple[str, ...], index_dir: str, model: str, top: int | None, min_score: float | None,
             params_path: str, as_json: bool) -> None:
    """Identify each QUERY audio file: best matching references, score and offset, best first.

    The model comes from the MLflow registry by default (alias champion, or the newest candidate
    with a warning while there is no champion); --model or $MUSICID_MODEL_URI switch it without a
    code change. The model is self-checked at load and an index made by another model is refused.
    The model and index are loaded once for all queries. A query that cannot be decoded is
    reported (with --json: an "error" field and no matches) and the others are still answered.
    score is the offset-consistent similarity per query segment (1.0 = perfect); offset_s is where
    in the reference the query starts. "matched" is false when the best score is below the
    open-set threshold (calibrated in fingerprint-evaluate at fingerprint.evaluate.target_fpr of
    out-of-catalog queries): the clip is most likely not in the catalog.

    Exit status: 0 when every query was answered, 1 when any query could not be decoded, 2 when
    the model, registry or index cannot be used.
    """
    from musicid.families.fingerprint.identifier import Identifier

    _log_to_stderr()
    cfg = load_params_or_defaults(params_path).fingerprint.identify
    with resolved_model(model, params_path) as (model_dir, bundled_index, described, settings):
        index_path = index_dir or bundled_index or DEFAULT_INDEX
        click.echo(f"model: {described}; index: {index_dir or ('registered with the model' if bundled_index else index_path)}",
                   err=True)
        flat, curve, source = open_set_source(min_score, cfg.min_score, settings, model_dir,
                                              Path(index_path) == Path(DEFAULT_INDEX) and not bundled_index)
        click.echo(f"open set: {source}", err=True)
        identifier = Identifier.load(model_dir, index_path, cfg.model_copy(update={"min_score": flat}), open_set=curve)
    def show(result: dict) -> None:
        if "error" not in result and (not result["matches"] or result.get("matched") is False):
            click.echo("  no match" + (" (best below the open-set threshold)" if result["matches"] else ""))
        for rank, match in enumerate(result["matches"], 1):
            mark = "" if match.get("matched", True) else "  (below threshold)"
            click.echo(f"  {rank:2d}. {match['score']:.3f}  {match['ref']}  @ {match['offset_s']:.2f} s{mark}")

    answer_queries(queries, lambda query: identifier.identify_path(query, top=top), as_json, show)


@main.command("metrics")
@click.argument("path", default="reports/fingerprint/eval/metrics.json", type=click.Path(exists=True, dir_okay=False))
def metrics_table(path: str) -> None:
    """Print the hit-rate table (top-1 per condition × query length) of an evaluation report."""
    from musicid.fsutil import read_json
    from musicid.families.fingerprint.stages import format_hit_table

    click.echo(format_hit_table(read_json(path)))
