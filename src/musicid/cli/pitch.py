"""`musicid pitch`: per-frame pitches of audio files; the evaluation table."""

from __future__ import annotations

from typing import Any

import click

from musicid.cli.base import MODEL_URI_ENV, PARAMS_OPTION, _log_to_stderr, answer_queries, load_params_or_defaults, main, resolved_model

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
    from musicid.families.pitch.evaluate import format_table
    from musicid.fsutil import read_json

    click.echo(format_table(read_json(path)))
