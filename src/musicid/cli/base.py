"""What every command group shares: the root group, common options, one-line errors, model resolution."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
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

    Model families on one pipeline (dvc.yaml): synth → ingest → prepare, then per family
    fingerprint-{shards,train,index,evaluate,report} (which recording, and where),
    works-{split,features,train,index,evaluate,report} (which composition a performance is a
    version of), and pitch-{synth,train,evaluate,report} (which pitches sound in each window) with
    pitch-{notes-render,notes-shards,onset-train,frame-train,transcribe-evaluate,transcribe-report}
    (notes: onset and frame networks on note-labelled audio, registered as musicid-transcriber);
    each family has a `-train-prod` stage (K-fold production training; pitch's trains the onset and
    frame networks). `dvc repro` rebuilds what is stale, and every run is
    tracked in MLflow. These commands inspect sources, validate manifests, look into stores, build
    indexes for any folder, manage the model registry and answer audio (with each family's registry
    champion by default): `musicid identify` for recordings, `musicid works identify` for works,
    `musicid pitch predict` for pitches, `musicid transcribe` for notes (MIDI + CSV); `musicid pitch
    records` lists every transcription run's hyperparameters and scores; `musicid exp tune / summary /
    best-epochs` run tuning grids as queued DVC experiments and read them (and production training) back.
    """


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


MODEL_URI_ENV = "MUSICID_MODEL_URI"


def load_params_or_defaults(params_path: str) -> Any:
    """params.yaml when it exists (validated), else every default: commands work outside a repo too."""
    from musicid.config import Params, load_params

    return load_params(params_path) if Path(params_path).exists() else Params()


@dataclass
class ResolvedModel:
    """What a command answers with: the model folder, what was registered with it, and how to name it."""

    model_dir: Path
    index_dir: Path | None  # the bundled index, when the registered model carries one
    description: str
    settings: dict[str, Any] = field(default_factory=dict)  # registered with it, e.g. a calibrated threshold
    extra: dict[str, Path] = field(default_factory=dict)  # further folders of a bundle (a transcriber's frame network)


@contextlib.contextmanager
def resolved_bundle(value: str | None, params_path: str, family: str = "fingerprint",
                    env: tuple[str, ...] = (MODEL_URI_ENV,), registry: Any = None) -> Iterator[ResolvedModel]:
    """The model for --model / the first set variable of `env` / the registry's champion.

    `registry`: one of the family's registered models (default its main one, `<family>.registry`).
    A `models:/` URI is downloaded from the MLflow registry (bundled index, settings and extra
    folders; removed again afterwards); anything else is a model folder. Only the default champion
    falls back to the newest candidate.
    """
    cfg = registry or load_params_or_defaults(params_path).family(family).registry
    champion = f"models:/{cfg.model_name}@{cfg.champion_alias}"
    uri = value or next((os.environ[name] for name in env if os.environ.get(name)), None) or champion
    if not uri.startswith("models:/"):
        yield ResolvedModel(Path(uri), None, uri)
        return
    from musicid.tracking import fetch

    fetched = fetch(uri, fallback_alias=cfg.candidate_alias if uri == champion and not value else None)
    if fetched.warning:
        click.echo(fetched.warning, err=True)
    try:
        version = fetched.version
        yield ResolvedModel(fetched.model_dir, fetched.index_dir,
                            f"{uri} (version {version.version}, signature {version.signature})",
                            fetched.settings, dict(fetched.extra))
    finally:
        fetched.cleanup()


@contextlib.contextmanager
def resolved_model(value: str | None, params_path: str, family: str = "fingerprint",
                   env: tuple[str, ...] = (MODEL_URI_ENV,)) -> Iterator[tuple[Path, Path | None, str, dict[str, Any]]]:
    """(model folder, bundled index or None, description, bundle settings) of `resolved_bundle`."""
    with resolved_bundle(value, params_path, family, env) as got:
        yield got.model_dir, got.index_dir, got.description, got.settings


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


def answer_queries(queries: tuple[str, ...], answer: Callable[[str], dict[str, Any]], as_json: bool,
                   show: Callable[[dict[str, Any]], None]) -> None:
    """Answer each query: one JSON line each, or its name, an error line or `show(result)`; exit 1 if any failed."""
    failed = 0
    for query in queries:
        result = answer(query)
        failed += "error" in result
        if as_json:
            click.echo(json.dumps(result))
            continue
        click.echo(query)
        if "error" in result:
            click.echo(f"  error: {result['error']}")
        show(result)
    sys.exit(1 if failed else 0)
