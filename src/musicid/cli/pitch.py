"""`musicid pitch`: per-frame pitches of audio files; the evaluation table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from musicid.cli.base import (
    MODEL_URI_ENV, PARAMS_OPTION, _log_to_stderr, answer_queries, load_params_or_defaults, main, resolved_bundle, resolved_model,
)

PITCH_MODEL_ENV = "MUSICID_PITCH_MODEL_URI"
ENVS = (PITCH_MODEL_ENV, MODEL_URI_ENV)


@main.group()
def pitch() -> None:
    """Pitch: which pitches sound in each window of a recording (confidence + energy per log bin).

    The model comes from the registry (musicid-pitch @champion, or the newest @candidate with a
    warning) unless --model or $MUSICID_PITCH_MODEL_URI / $MUSICID_MODEL_URI name another (a model
    folder such as models/pitch, or models:/NAME@ALIAS); every loaded model is self-checked.
    """


@pitch.command("predict")
@click.argument("audio", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--model", "model", default=None,
              help=f"Model folder (models/pitch) or registry URI [default: ${PITCH_MODEL_ENV}, else ${MODEL_URI_ENV}, "
                   "else models:/musicid-pitch@champion].")
@click.option("--hop", "hop", type=click.IntRange(1), default=None,
              help="Samples between window starts at the model's rate [default: pitch.predict.hop_samples].")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Confidence a pitch needs [default: pitch.predict.threshold, else the model's own, chosen on validation].")
@PARAMS_OPTION
@click.option("--json", "as_json", is_flag=True,
              help='One JSON line per file: {"query", "model_signature", "hop_s", "frames": [{"time_s", "pitches": '
                   '[{"frequency_hz", "midi", "confidence", "energy"}]}]}.')
def pitch_predict(audio: tuple[str, ...], model: str | None, hop: int | None, threshold: float | None,
                  params_path: str, as_json: bool) -> None:
    """Per-frame pitches of each AUDIO file (decoded, mono, resampled to the model's rate).

    Exit status: 0 when every file was answered, 1 when any failed (an undecodable file is reported
    and the others are still answered), 2 when the model cannot be used.
    """
    from musicid.families.pitch.io import answer_path, load_model

    _log_to_stderr()
    cfg = load_params_or_defaults(params_path).pitch.predict
    hop, threshold = hop or cfg.hop_samples, threshold or cfg.threshold  # None: the model's own
    with resolved_model(model, params_path, family="pitch", env=ENVS) as (model_dir, _, described, settings):
        click.echo(f"model: {described}", err=True)
        loaded = load_model(model_dir, "auto")

    def show(result: dict[str, Any]) -> None:
        for frame in result["frames"]:
            notes = ", ".join(f"{p['frequency_hz']:.1f} Hz ({p['confidence']:.2f})" for p in frame["pitches"])
            click.echo(f"  {frame['time_s']:8.3f} s  {notes or '-'}")

    answer_queries(audio, lambda path: answer_path(loaded, path, hop, threshold), as_json, show)


@pitch.command("metrics")
@click.argument("path", default="reports/pitch/eval/metrics.json", type=click.Path(exists=True, dir_okay=False))
def pitch_metrics(path: str) -> None:
    """Print a pitch evaluation report: polyphonic P/R/F1, single-note cents by band, phase probes."""
    from musicid.families.pitch.metrics import format_table
    from musicid.fsutil import read_json

    click.echo(format_table(read_json(path)))


@pitch.command("records")
@PARAMS_OPTION
@click.option("--set", "test_set", default=None, help="Labelled set whose test note F1 sorts the table [default: chorales].")
@click.option("--out-dir", default="reports/pitch", show_default=True, type=click.Path(file_okay=False),
              help="Where records.md and records.csv are written.")
def pitch_records(params_path: str, test_set: str | None, out_dir: str) -> None:
    """Every transcription run from MLflow: hyperparameters, train/eval frame P/R/F1 of the onset and frame
    networks, test note P/R/F1; best test note F1 first, the champion marked *.

    One row per `pitch-transcribe-evaluate` run (a `dvc repro` or each `dvc exp run`, queued sweeps
    included); the same table goes to OUT_DIR/records.md and records.csv.
    """
    from musicid.families.pitch.records import collect, default_set, table_rows, terminal_table, write_tables

    params = load_params_or_defaults(params_path)
    records, folded, note = collect(params.tracking, params.pitch_transcribe.registry)
    if not records:
        click.echo("no transcription runs yet: `dvc repro pitch-transcribe-evaluate` (or `dvc exp run`) records one")
        return
    test_set = test_set or default_set(records)
    headers, rows = table_rows(records, test_set)
    click.echo(terminal_table(headers, rows))
    md, csv_path = write_tables(headers, rows, Path(out_dir), note)
    click.echo(f"{len(records)} runs" + (f" ({folded} repeats of the same networks and post-processing folded)" if folded else "")
               + f"; {note}; → {md}, {csv_path}")


TRANSCRIBER_MODEL_ENV = "MUSICID_TRANSCRIBER_MODEL_URI"


@main.command("transcribe")
@click.argument("audio", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for <name>.mid and <name>.csv per input.")
@click.option("--model", "model", default=None,
              help=f"Registry URI of a transcriber [default: ${TRANSCRIBER_MODEL_ENV}, else ${MODEL_URI_ENV}, else "
                   "models:/musicid-transcriber@champion, else the workspace's two networks].")
@click.option("--onset-model", default=None, type=click.Path(file_okay=False),
              help="An onset network's folder (with --frame-model: use these two instead of the registry).")
@click.option("--frame-model", default=None, type=click.Path(file_okay=False), help="A frame network's folder.")
@PARAMS_OPTION
@click.option("--json", "as_json", is_flag=True,
              help='One JSON line per file: {"query", "model_signature", "notes": [{"onset_s", "offset_s", "pitch", "velocity"}]}.')
def transcribe(audio: tuple[str, ...], out_dir: str, model: str | None, onset_model: str | None, frame_model: str | None,
               params_path: str, as_json: bool) -> None:
    """Notes of each AUDIO file (onset + frame networks, then post-processing) as a MIDI file and a CSV
    (onset_s, offset_s, pitch, velocity) in --out.

    The networks come from the registry (musicid-transcriber @champion, else the newest @candidate
    with a warning), with the post-processing registered with them; --model or
    $MUSICID_TRANSCRIBER_MODEL_URI / $MUSICID_MODEL_URI name another version; --onset-model and
    --frame-model name two folders (post-processing from params.yaml's pitch_transcribe). Without a
    registry, the workspace's models/pitch-onset and models/pitch-frame are used, with the post-processing
    their evaluation tuned (reports/pitch/transcribe/metrics.json) when it ran them. Both networks are
    self-checked on load. Exit status: 0 when every file was transcribed (silence gives no notes and a
    warning), 1 when any failed to decode (the others still are), 2 when the networks cannot be used.
    """
    import json

    from musicid.config import TranscribeConfig
    from musicid.families.pitch.transcribe import notes_array, transcribe_path, write_notes

    _log_to_stderr()
    params = load_params_or_defaults(params_path)
    with _transcriber(model, onset_model, frame_model, params, params_path) as (tr, post, described):
        click.echo(f"model: {described}", err=True)
        cfg = TranscribeConfig(**(params.pitch_transcribe.model_dump(exclude={"registry"}) | post))
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        failed = 0
        for path in audio:
            result = transcribe_path(tr, path, cfg)
            if "error" in result:
                click.echo(f"error: {path}: {result['error']}", err=True)
                failed += 1
                continue
            if result.get("warning"):
                click.echo(f"warning: {result['warning']}", err=True)
            stem = Path(path).stem
            write_notes(notes_array(result), out / f"{stem}.mid", out / f"{stem}.csv")
            if as_json:
                click.echo(json.dumps(result))
            else:
                click.echo(f"{path}: {len(result['notes'])} notes → {out / (stem + '.mid')}, {out / (stem + '.csv')}")
    raise SystemExit(1 if failed else 0)


def _transcriber(model: str | None, onset_model: str | None, frame_model: str | None, params: Any, params_path: str):
    """(Transcriber, registered post-processing, description): from two folders or the registry.

    The default champion falls back to @candidate (as every family's does), then to the workspace's
    two networks when nothing is registered yet."""
    import contextlib

    from musicid.families.pitch.stages import TRANSCRIBE_REPORT
    from musicid.families.pitch.transcribe import evaluated_post_processing, load_transcriber
    from musicid.layout import family_layout
    from musicid.models.io import ModelError
    from musicid.tracking import TrackingError

    workspace = [str(family_layout("pitch").network(kind)) for kind in ("onset", "frame")]
    window = params.pitch_notes.window_frames
    device = params.pitch_transcribe.device

    @contextlib.contextmanager
    def folders(onset: str, frame: str, described: str, post: dict[str, Any] | None, frames: int | None = None):
        tr = load_transcriber(onset, frame, device, frames or window)  # ModelError: exit 2
        yield tr, evaluated_post_processing(tr, TRANSCRIBE_REPORT / "metrics.json") if post is None else post, described

    if onset_model or frame_model:
        if not (onset_model and frame_model):
            raise click.UsageError("--onset-model and --frame-model go together")
        return folders(onset_model, frame_model, f"{onset_model} + {frame_model}", {})
    chosen = model or os.environ.get(TRANSCRIBER_MODEL_ENV) or os.environ.get(MODEL_URI_ENV)

    @contextlib.contextmanager
    def registered():
        with contextlib.ExitStack() as stack:
            try:
                got = stack.enter_context(resolved_bundle(model, params_path, "pitch", (TRANSCRIBER_MODEL_ENV, MODEL_URI_ENV),
                                                          registry=params.pitch_transcribe.registry))
            except TrackingError as exc:
                if chosen or not all(Path(p, "config.json").is_file() for p in workspace):
                    raise
                click.echo(f"warning: {exc}; using the workspace's networks", err=True)
                got = None
            if got is None:
                with folders(*workspace, " + ".join(workspace), None) as answer:
                    yield answer
                return
            if "frame" not in got.extra:
                raise ModelError(f"{got.description}: not a transcriber bundle (no frame network); "
                                 "give folders with --onset-model and --frame-model")
            with folders(str(got.model_dir), str(got.extra["frame"]), got.description,
                         got.settings.get("transcribe", {}), got.settings.get("window_frames")) as answer:
                yield answer

    return registered()
