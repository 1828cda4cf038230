"""`musicid works`: identify the work a performance is a version of; extend the index; evaluate; fine-tune."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from musicid.cli.base import MODEL_URI_ENV, PARAMS_OPTION, _emit_json, answer_queries, _log_to_stderr, load_params_or_defaults, main, resolved_model

DEFAULT_MODEL = "models/works"
DEFAULT_INDEX = "data/index/works"
WORKS_MODEL_ENV = "MUSICID_WORKS_MODEL_URI"
MODEL_OPTION = click.option(
    "--model", "model", default=None,
    help=f"Model folder ({DEFAULT_MODEL}) or registry URI (models:/NAME@ALIAS, models:/NAME/VERSION) "
         f"[default: ${WORKS_MODEL_ENV}, else ${MODEL_URI_ENV}, else models:/musicid-work-identifier@champion].")
ENVS = (WORKS_MODEL_ENV, MODEL_URI_ENV)


@main.group()
def works() -> None:
    """Work (cover-song) identification: which composition a performance is a version of.

    The model comes from the registry (musicid-work-identifier @champion, or the newest @candidate
    with a warning) unless --model or $MUSICID_WORKS_MODEL_URI / $MUSICID_MODEL_URI name another;
    every loaded model is self-checked and an index made by another model is refused.
    """


RERANK_OPTION = click.option(
    "--rerank-top", "rerank_top", type=click.IntRange(0), default=None,
    help="Align this many nearest performances with the query's chroma and rank them by it "
         "[default: works.identify.rerank.top_k; 0 = embedding ranking only].")


def with_rerank_top(cfg: Any, rerank_top: int | None) -> Any:
    """works.identify with rerank.top_k overridden from the command line."""
    if rerank_top is None:
        return cfg
    return cfg.model_copy(update={"rerank": cfg.rerank.model_copy(update={"top_k": rerank_top})})


@works.command("identify")
@click.argument("queries", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--index", "index_dir", default=None, type=click.Path(file_okay=False),
              help=f"Works index [default: the one registered with the model, else {DEFAULT_INDEX}].")
@MODEL_OPTION
@click.option("--top", type=click.IntRange(1), default=None, help="Works per query [default: works.identify.top, 10].")
@click.option("--centroids", is_flag=True, default=None, help="Rank by work centroid, not by the nearest performance.")
@RERANK_OPTION
@PARAMS_OPTION
@click.option("--json", "as_json", is_flag=True,
              help='One JSON line per query: {"query", "works": [{"work_id", "score", "alignment", "performances"}]} '
                   'or "error".')
def works_identify(queries: tuple[str, ...], index_dir: str | None, model: str | None, top: int | None,
                   centroids: bool | None, rerank_top: int | None, params_path: str, as_json: bool) -> None:
    """Rank works for each QUERY performance, best first, with the nearest reference performances.

    score is the cosine similarity of the query to the work's nearest performance (or its centroid);
    alignment is the chroma alignment (Qmax) score of the works re-ranked by it, which come first.
    A query shorter than the model's shortest training chunk is refused with the minimum, an
    undecodable one is reported, and the others are still answered.

    Exit status: 0 when every query was answered, 1 when any failed, 2 when the model or index
    cannot be used.
    """
    from musicid.families.works.identify import WorkIdentifier

    _log_to_stderr()
    cfg = with_rerank_top(load_params_or_defaults(params_path).works.identify, rerank_top)
    with resolved_model(model, params_path, family="works", env=ENVS) as (model_dir, bundled, described, _settings):
        index_path = index_dir or bundled or DEFAULT_INDEX
        click.echo(f"model: {described}; index: {index_dir or ('registered with the model' if bundled else index_path)}",
                   err=True)
        identifier = WorkIdentifier.load(model_dir, index_path, cfg)
    def show(result: dict) -> None:
        for rank, work in enumerate(result["works"], 1):
            nearest = ", ".join(f"{p['ref']} {p['score']:.3f}" for p in work["performances"][:2])
            aligned = f"  alignment {work['alignment']:.2f}" if "alignment" in work else ""
            click.echo(f"  {rank:2d}. {work['score']:.3f}  {work['work_id']}{aligned}" + (f"  ({nearest})" if nearest else ""))

    answer_queries(queries, lambda query: identifier.identify_path(query, top=top, use_centroids=centroids), as_json,
                   show)


@works.command("metrics")
@click.argument("path", default="reports/works/eval/metrics.json", type=click.Path(exists=True, dir_okay=False))
def works_metrics(path: str) -> None:
    """Print the ranking table (mAP, MR1, top-1, top-10 per test set) of a works evaluation report."""
    from musicid.families.works.stages import format_table
    from musicid.fsutil import read_json

    click.echo(format_table(read_json(path)))


@works.command("add")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--csv", "csv_path", default=None, type=click.Path(dir_okay=False),
              help="CSV of the performances: file, work_id[, track_id] [default: FOLDER/metadata.csv].")
@click.option("--index", "index_dir", default=DEFAULT_INDEX, show_default=True, type=click.Path(file_okay=False),
              help="Works index to extend.")
@click.option("--out", "out_dir", default="data/index/works-extended", show_default=True, type=click.Path(file_okay=False),
              help="New index folder (the old one is left as it was).")
@MODEL_OPTION
@click.option("--dvc/--no-dvc", "track_dvc", default=None,
              help="`dvc add` the new index [default: when run inside a DVC repository].")
@PARAMS_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def works_add(folder: str, csv_path: str | None, index_dir: str, out_dir: str, model: str | None,
              track_dvc: bool | None, params_path: str, as_json: bool) -> None:
    """Add the performances in FOLDER (audio + CSV of work ids) to a works index without retraining.

    Writes a new index at --out (old vectors + the new performances, new centroids), versioned with
    DVC. A performance whose audio is already indexed (same content hash) is skipped with a message;
    undecodable audio is quarantined with its reason while the rest is added; an index made by
    another model is refused naming both signatures. Then: `musicid works identify --index OUT ...`.
    """
    from musicid.families.works.collection import read_collection
    from musicid.families.works.index import add_performances
    from musicid.families.works.io import load_model

    _log_to_stderr()
    params = load_params_or_defaults(params_path)
    items = read_collection(folder, csv_path)
    with resolved_model(model, params_path, family="works", env=ENVS) as (model_dir, bundled, described, _settings):
        click.echo(f"model: {described}", err=True)
        loaded = load_model(model_dir, params.works.index.device)
    report = add_performances(index_dir, out_dir, loaded, items, params.works.index)
    if track_dvc or (track_dvc is None and Path(".dvc").is_dir()):
        done = subprocess.run(["dvc", "add", out_dir], capture_output=True, text=True)
        report["dvc"] = f"{out_dir}.dvc" if done.returncode == 0 else f"dvc add failed: {done.stderr.strip()[:200]}"
    if as_json:
        _emit_json({k: v for k, v in report.items() if k != "meta"} | {"n_refs": report["meta"]["n_refs"]})
        return
    for dup in report["duplicates"]:
        click.echo(f"  skipped {dup['track_id']}: already indexed (as {dup['same_as']})")
    for bad in report["quarantined"]:
        click.echo(f"  quarantined {bad['track_id']} ({bad['path']}): {bad['reason']}")
    click.echo(f"works add: {len(report['added'])} added, {len(report['duplicates'])} already indexed, "
               f"{len(report['quarantined'])} quarantined → {out_dir} ({report['meta']['n_refs']} performances of "
               f"{report['meta']['works']} works)" + (f"; {report['dvc']}" if report.get("dvc") else ""))


@works.command("evaluate-folder")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--csv", "csv_path", default=None, type=click.Path(dir_okay=False),
              help="CSV: file, work_id[, track_id] [default: FOLDER/metadata.csv].")
@click.option("--only-works", "only_works", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Text file of work ids (one per line): evaluate only these works.")
@MODEL_OPTION
@RERANK_OPTION
@PARAMS_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
def works_evaluate_folder(folder: str, csv_path: str | None, only_works: str | None, model: str | None,
                          rerank_top: int | None, params_path: str, as_json: bool) -> None:
    """mAP, MR1, top-1/10 and seconds per query over FOLDER's performances, all against all (self skipped)."""
    from musicid.families.works.collection import read_collection, read_work_list
    from musicid.families.works.evaluate import evaluate_collection
    from musicid.families.works.io import load_model

    _log_to_stderr()
    params = load_params_or_defaults(params_path)
    tracks = read_collection(folder, csv_path, read_work_list(only_works))
    with resolved_model(model, params_path, family="works", env=ENVS) as (model_dir, _, described, _settings):
        click.echo(f"model: {described}", err=True)
        loaded = load_model(model_dir, params.works.index.device)
    rerank = with_rerank_top(params.works.identify, rerank_top).rerank
    result = evaluate_collection(loaded, tracks, progress=sys.stderr.isatty(), rerank=rerank)
    result |= {"model_signature": loaded.signature}
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['performances']} performances of {result['works']} works: mAP {result['mAP']:.3f}, "
               f"MR1 {result['MR1']:.2f}, top-1 {result['top1']:.3f}, top-10 {result['top10']:.3f}, "
               f"{result['seconds_per_query']:.3f} s per query")
    if "embedding_only" in result:
        first = result["embedding_only"]
        click.echo(f"  embedding alone (before aligning the top {rerank.top_k}): mAP {first['mAP']:.3f}, "
                   f"MR1 {first['MR1']:.2f}, top-1 {first['top1']:.3f}, top-10 {first['top10']:.3f}")


@works.command("finetune")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--init", "init", required=True, type=click.Path(exists=True, file_okay=False), help="Works model folder to start from.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Fine-tuned model folder to write.")
@click.option("--csv", "csv_path", default=None, type=click.Path(dir_okay=False))
@click.option("--only-works", "only_works", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Text file of work ids: train only on these works.")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Override works.train.epochs.")
@PARAMS_OPTION
def works_finetune(folder: str, init: str, out_dir: str, csv_path: str | None, only_works: str | None,
                   epochs: int | None, params_path: str) -> None:
    """Fine-tune a works model on FOLDER's performances (the works stages in a scratch folder)."""
    from musicid.families.works.collection import read_collection, read_work_list
    from musicid.workflows.finetune import finetune

    _log_to_stderr()
    tracks = read_collection(folder, csv_path, read_work_list(only_works))
    result = finetune(Path(folder), tracks, Path(init), Path(out_dir), load_params_or_defaults(params_path), epochs)
    click.echo(json.dumps(result))
