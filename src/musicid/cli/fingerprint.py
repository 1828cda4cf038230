"""Fingerprint commands: `musicid index build`, `musicid identify`, `musicid metrics`."""

from __future__ import annotations

import sys

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
def index_build(audio_dir: str, out_dir: str, model: str, params_path: str, kind: str | None) -> None:
    """Embed every audio file under AUDIO_DIR (named by relative path) into an index at --out.

    Index settings come from params.yaml's `fingerprint.index` section (defaults without it). An interrupted
    build resumes from `<out>.partial/` when rerun with the same model and files.
    """
    import time

    from musicid.families.fingerprint.io import load_model
    from musicid.index import build_index, index_refs_from_folder

    _log_to_stderr()
    cfg = load_params_or_defaults(params_path).fingerprint.index
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
@click.option("--top", type=click.IntRange(1), default=None, help="Matches per query [default: fingerprint.identify.top, 5].")
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
    from musicid.families.fingerprint.identifier import Identifier

    _log_to_stderr()
    cfg = load_params_or_defaults(params_path).fingerprint.identify
    with resolved_model(model, params_path) as (model_dir, bundled_index, described):
        index_path = index_dir or bundled_index or DEFAULT_INDEX
        click.echo(f"model: {described}; index: {index_dir or ('registered with the model' if bundled_index else index_path)}",
                   err=True)
        identifier = Identifier.load(model_dir, index_path, cfg)
    def show(result: dict) -> None:
        if "error" not in result and not result["matches"]:
            click.echo("  no match")
        for rank, match in enumerate(result["matches"], 1):
            click.echo(f"  {rank:2d}. {match['score']:.3f}  {match['ref']}  @ {match['offset_s']:.2f} s")

    answer_queries(queries, lambda query: identifier.identify_path(query, top=top), as_json, show)


@main.command("metrics")
@click.argument("path", default="reports/fingerprint/eval/metrics.json", type=click.Path(exists=True, dir_okay=False))
def metrics_table(path: str) -> None:
    """Print the hit-rate table (top-1 per condition × query length) of an evaluation report."""
    from musicid.fsutil import read_json
    from musicid.families.fingerprint.stages import format_hit_table

    click.echo(format_hit_table(read_json(path)))
