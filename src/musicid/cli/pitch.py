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


@main.command("transcribe")
@click.argument("audio", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for <name>.mid and <name>.csv per input.")
@click.option("--onset-model", default="models/pitch-onset", show_default=True, type=click.Path(file_okay=False),
              help="The onset network's model folder.")
@click.option("--frame-model", default="models/pitch-frame", show_default=True, type=click.Path(file_okay=False),
              help="The frame network's model folder.")
@PARAMS_OPTION
def transcribe(audio: tuple[str, ...], out_dir: str, onset_model: str, frame_model: str, params_path: str) -> None:
    """Notes of each AUDIO file (onset + frame networks, post-processed by pitch_transcribe.*) as a MIDI
    file and a CSV (onset_s, offset_s, pitch, velocity) in --out.

    Exit status: 0 when every file was transcribed (silence gives no notes and a warning), 1 when any
    failed to decode (the others still are), 2 when the networks cannot be used.
    """
    import warnings
    from pathlib import Path

    from musicid.audio.decode import decode
    from musicid.audio.resample import to_model_rate, to_mono
    from musicid.families.pitch.transcribe import load_transcriber, write_notes
    from musicid.models.io import ModelError

    _log_to_stderr()
    params = load_params_or_defaults(params_path)
    try:
        tr = load_transcriber(onset_model, frame_model, params.pitch_transcribe.device, params.pitch_notes.window_frames)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in audio:
        try:
            decoded = decode(path)
        except Exception as exc:  # one bad file is reported, the others go on
            click.echo(f"error: {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
            failed += 1
            continue
        signal = to_model_rate(to_mono(decoded.samples), decoded.sample_rate, tr.spec.sample_rate)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            notes = tr.transcribe(signal, params.pitch_transcribe, name=path)
        for w in caught:
            click.echo(f"warning: {w.message}", err=True)
        stem = Path(path).stem
        write_notes(notes, out / f"{stem}.mid", out / f"{stem}.csv")
        click.echo(f"{path}: {len(notes)} notes → {out / (stem + '.mid')}, {out / (stem + '.csv')}")
    raise SystemExit(1 if failed else 0)
