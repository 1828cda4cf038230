"""Score a transcriber on the held-out test pieces: note-level P/R/F1 with mir_eval, frame-level per network.

Whole test recordings (`data/labelled/pitch/<source>/`, split `test`, never trained on) are
transcribed end to end and compared with their MIDI labels restricted to the networks' pitch range:
`mir_eval.transcription.precision_recall_f1_overlap` with `onset_tolerance_s`, onset only
(`offset_ratio=None`) and onset + offset (`offset_ratio`); figures are the mean over pieces (as
MAESTRO results are reported) with the pooled note counts beside them. Frame-level P/R/F1 of each
network at its own training threshold, over every frame × pitch of the test pieces. Speed: seconds
of compute per minute of audio. Each set's note scores are also broken down by the renderings'
instrument style (`by_style`; a bar chart per set), which is where a transcriber's misses concentrate.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from musicid.config import PitchNotesConfig, TranscribeConfig
from musicid.errors import NotReadyError
from musicid.families.pitch.frames import decode_labelled, frame_targets
from musicid.families.pitch.labelled import read_labels, read_tracks, track_style
from musicid.families.pitch.notetrain import frame_scores
from musicid.families.pitch.records import TUNED_VAL_F1, tuned_metric
from musicid.families.pitch.transcribe import Transcriber, notes_from_probs


def note_scores(ref: np.ndarray, est: np.ndarray, cfg: TranscribeConfig) -> dict[str, dict[str, float]]:
    """mir_eval note P/R/F1, onset only and onset + offset, of one piece."""
    import mir_eval

    out: dict[str, dict[str, float]] = {}
    for name, ratio in (("onset", None), ("onset_offset", cfg.offset_ratio)):
        if not len(ref) or not len(est):
            out[name] = {"precision": 0.0, "recall": 0.0, "f1": 0.0}
            continue
        p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
            ref[:, :2], mir_eval.util.midi_to_hz(ref[:, 2]), est[:, :2], mir_eval.util.midi_to_hz(est[:, 2]),
            onset_tolerance=cfg.onset_tolerance_s, offset_ratio=ratio)
        out[name] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    return out


def pieces(tr: Transcriber, labelled: Path, source: str, split: str) -> Iterator[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    """(tracks.csv row, audio at the networks' rate, reference notes in the networks' pitch range) of one split."""
    lo, hi = tr.spec.min_midi, tr.spec.min_midi + tr.spec.n_pitches
    for track in read_tracks(labelled / source):
        if track["split"] != split:
            continue
        audio = decode_labelled(labelled / source / "audio" / f"{track['track']}.flac", tr.spec.sample_rate)
        ref = read_labels(labelled / source / "labels" / f"{track['track']}.mid")
        yield track, audio, ref[(ref[:, 2] >= lo) & (ref[:, 2] < hi)]


def tune_post_processing(tr: Transcriber, labelled: Path, cfg: TranscribeConfig) -> tuple[TranscribeConfig, dict[str, Any]]:
    """The post-processing of `cfg.tune`'s grid with the best note onset F1 on the validation pieces
    (mean over every piece of every set, as the test is reported per set; the networks run once per
    piece), and the record of every try with each set's mean beside it."""
    fixed = cfg.post_processing()
    grid = cfg.tune.grid(fixed)
    probs: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for source in cfg.sets:
        if (labelled / source / "tracks.csv").is_file():
            probs[source] = [(ref, *tr.probabilities(audio)) for _, audio, ref in pieces(tr, labelled, source, "val")]
    probs = {source: items for source, items in probs.items() if items}
    if not probs:
        raise NotReadyError("pitch_transcribe.tune.enabled is true but no set in pitch_transcribe.sets has validation "
                            "pieces; add some (pitch_notes) or set pitch_transcribe.tune.enabled: false")
    tried = []
    for combo in tqdm(grid, desc="pitch-transcribe: tune on val", unit="setting", mininterval=2.0):
        trial = cfg.model_copy(update=combo)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f1 = {source: [note_scores(ref, notes_from_probs(on, fr, tr.fps, tr.spec.min_midi, trial), trial)["onset"]["f1"]
                           for ref, on, fr in items] for source, items in probs.items()}
        tried.append({**combo, "val_note_onset_f1": float(np.mean(sum(f1.values(), []))),
                      "per_set": {source: float(np.mean(scores)) for source, scores in f1.items()}})
    best = max(range(len(tried)), key=lambda i: (tried[i]["val_note_onset_f1"], -i))
    chosen = {key: tried[best][key] for key in grid[0]}
    return cfg.model_copy(update=chosen), {"chosen": chosen, "val_note_onset_f1": tried[best]["val_note_onset_f1"],
                                           "val_pieces": {s: len(v) for s, v in probs.items()}, "tried": tried}


def flat_note_scores(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """note_scores' {onset: {precision, ...}, onset_offset: {...}} → {onset_precision, ..., onset_offset_f1}."""
    return {f"{kind}_{m}": v[m] for kind, v in scores.items() for m in ("precision", "recall", "f1")}


STYLE_METRICS = ("onset_precision", "onset_recall", "onset_f1", "onset_offset_f1")


def by_style(per_track: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per-piece note scores (each with its `style`) → style → {pieces, mean of each STYLE_METRICS},
    best onset F1 first."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for track in per_track:
        groups.setdefault(track["style"], []).append(track)
    out = {style: {"pieces": len(rows), **{m: float(np.mean([r[m] for r in rows])) for m in STYLE_METRICS}}
           for style, rows in groups.items()}
    return dict(sorted(out.items(), key=lambda kv: (-kv[1]["onset_f1"], kv[0])))


def style_bars_png(source: str, styles: dict[str, dict[str, float]], out_png: Path) -> None:
    """Note onset P, R and F1 per instrument style of one set's test pieces (horizontal bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(styles)[::-1]  # best at the top
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2), dpi=110)
    for i, (metric, colour) in enumerate((("onset_precision", "tab:blue"), ("onset_recall", "tab:orange"),
                                          ("onset_f1", "tab:green"))):
        ax.barh(y + (i - 1) * 0.27, [styles[n][metric] for n in names], height=0.27, color=colour,
                label=metric.replace("onset_", "note onset "))
    ax.set_yticks(y, [f"{n} ({styles[n]['pieces']})" for n in names], fontsize=8)
    ax.set_xlim(0, 1), ax.set_xlabel("mean over test pieces (pieces per style in brackets)")
    ax.set_title(f"{source} test: note scores by instrument style", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def evaluate_source(tr: Transcriber, labelled: Path, source: str, notes_cfg: PitchNotesConfig,
                    cfg: TranscribeConfig, thresholds: dict[str, float]) -> dict[str, Any]:
    per_track, frames = [], {"onset": ([], []), "frame": ([], [])}
    audio_s = compute_s = 0.0
    first = None
    for track, audio, ref in pieces(tr, labelled, source, "test"):
        name = track["track"]
        began = time.perf_counter()
        onset_p, frame_p = tr.probabilities(audio)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = notes_from_probs(onset_p, frame_p, tr.fps, tr.spec.min_midi, cfg)
        compute_s += time.perf_counter() - began
        audio_s += len(audio) / tr.spec.sample_rate
        on_t, fr_t, _, _ = frame_targets(ref, len(onset_p), tr.fps, tr.spec.min_midi, tr.spec.n_pitches,
                                         notes_cfg.onset_frames)
        frames["onset"][0].append(onset_p), frames["onset"][1].append(on_t)
        frames["frame"][0].append(frame_p), frames["frame"][1].append(fr_t)
        per_track.append({"track": name, "style": track_style(track), "reference_notes": len(ref),
                          "estimated_notes": len(est), **flat_note_scores(note_scores(ref, est, cfg))})
        if first is None:
            first = (name, ref, est, frame_p)
    mean = {k: float(np.mean([t[k] for t in per_track])) if per_track else 0.0
            for k in (per_track[0] if per_track else {}) if k.startswith("onset")}
    frame_level = {kind: frame_scores(np.concatenate(p), np.concatenate(t), thresholds[kind]) if p else {}
                   for kind, (p, t) in frames.items()}
    return {"tracks": len(per_track), "audio_minutes": round(audio_s / 60, 3),
            "reference_notes": sum(t["reference_notes"] for t in per_track),
            "estimated_notes": sum(t["estimated_notes"] for t in per_track),
            "note": mean, "by_style": by_style(per_track), "frame_level": frame_level,
            "seconds_per_audio_minute": round(compute_s / (audio_s / 60), 3) if audio_s else 0.0,
            "per_track": per_track, "_first": first}


def piano_roll_png(first: tuple[str, np.ndarray, np.ndarray, np.ndarray], fps: float, out_png: Path,
                   seconds: float = 20.0) -> None:
    """The first `seconds` of a test piece: frame probabilities, reference notes (boxes), estimates (lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name, ref, est, frame_p = first
    n = min(len(frame_p), int(seconds * fps))
    fig, ax = plt.subplots(figsize=(10, 4), dpi=110)
    ax.imshow(frame_p[:n].T, origin="lower", aspect="auto", cmap="Greys", extent=(0, n / fps, 20.5, 20.5 + frame_p.shape[1]),
              vmin=0, vmax=1)
    for on, off, pitch, _ in ref[ref[:, 0] < n / fps]:
        ax.add_patch(plt.Rectangle((on, pitch - 0.5), off - on, 1, fill=False, edgecolor="tab:blue", lw=0.8))
    for on, off, pitch, _ in est[est[:, 0] < n / fps]:
        ax.plot([on, off], [pitch, pitch], color="tab:red", lw=1.5)
    ax.set_xlabel("time (s)"), ax.set_ylabel("MIDI pitch")
    ax.set_title(f"{name}: frame probability (grey), reference notes (blue boxes), transcribed notes (red)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def evaluate_transcriber(tr: Transcriber, labelled: Path, notes_cfg: PitchNotesConfig, cfg: TranscribeConfig,
                         thresholds: dict[str, float], out_dir: Path) -> dict[str, Any]:
    """Every set's test pieces, with the post-processing tuned on the validation pieces first
    (`pitch_transcribe.tune.enabled`); the summary records what was tuned and what was evaluated."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tuning = None
    if cfg.tune.enabled:
        cfg, tuning = tune_post_processing(tr, labelled, cfg)
        print(f"pitch-transcribe-evaluate: tuned on {sum(tuning['val_pieces'].values())} validation pieces: "
              + ", ".join(f"{k} {v:g}" for k, v in tuning["chosen"].items())
              + f" (val note onset F1 {tuning['val_note_onset_f1']:.3f})")
    sets: dict[str, Any] = {}
    for source in cfg.sets:
        if not (labelled / source / "tracks.csv").is_file():
            continue
        result = evaluate_source(tr, labelled, source, notes_cfg, cfg, thresholds)
        first = result.pop("_first")
        if first is not None:
            piano_roll_png(first, tr.fps, out_dir / f"piano-roll-{source}.png")
            style_bars_png(source, result["by_style"], out_dir / f"note-f1-by-style-{source}.png")
        sets[source] = result
    return {"signatures": {"onset": tr.signatures[0], "frame": tr.signatures[1]}, "post_processing": cfg.post_processing(),
            "tuning": tuning, "scoring": {"onset_tolerance_s": cfg.onset_tolerance_s, "offset_ratio": cfg.offset_ratio},
            "sets": sets}


def flat_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Scalars for MLflow and the registry: <set>_note_onset_f1, <set>_frame_f1, ..."""
    out: dict[str, float] = {}
    for source, r in summary["sets"].items():
        for key, value in r["note"].items():
            out[f"{source}_note_{key}"] = value
        for kind, scores in r["frame_level"].items():
            for m in ("precision", "recall", "f1"):
                if m in scores:
                    out[f"{source}_{kind}_{m}"] = float(scores[m])
        out[f"{source}_seconds_per_audio_minute"] = r["seconds_per_audio_minute"]
    return out


def tuning_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """What the validation tuning chose (tuned_<key>) and its note onset F1 on the validation pieces
    (tuned_val_note_f1: not `<set>_note_onset_f1`, which names a test set); {} when not tuned."""
    tuning = summary.get("tuning")
    if not tuning:
        return {}
    return {tuned_metric(key): float(value) for key, value in tuning["chosen"].items()} | {
        TUNED_VAL_F1: float(tuning["val_note_onset_f1"])}


NETWORK_SPLITS = ("train", "eval")


def network_metrics(networks: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Each network's best-epoch frame P/R/F1 on train and eval (its train report) as <kind>_<split>_<metric>."""
    out: dict[str, float] = {}
    for kind, report in networks.items():
        for split in NETWORK_SPLITS:
            for m in ("precision", "recall", "f1"):
                if f"{split}_{m}" in report:
                    out[f"{kind}_{split}_{m}"] = float(report[f"{split}_{m}"])
        if "best_epoch" in report:
            out[f"{kind}_best_epoch"] = float(report["best_epoch"])
    return out


def format_table(summary: dict[str, Any]) -> str:
    lines = []
    for source, r in summary["sets"].items():
        n = r["note"]
        lines.append(f"{source} test ({r['tracks']} pieces, {r['audio_minutes']:.1f} min, {r['reference_notes']} notes): "
                     f"note P/R/F1 onset {n.get('onset_precision', 0):.3f}/{n.get('onset_recall', 0):.3f}/{n.get('onset_f1', 0):.3f}, "
                     f"onset+offset F1 {n.get('onset_offset_f1', 0):.3f}; frame-level F1 onset "
                     f"{r['frame_level']['onset'].get('f1', 0):.3f}, frame {r['frame_level']['frame'].get('f1', 0):.3f}; "
                     f"{r['seconds_per_audio_minute']:.2f} s per audio minute")
        if r.get("by_style"):
            lines.append(f"  {source} note onset F1 by style (pieces): " + ", ".join(
                f"{style} {s['onset_f1']:.3f} ({s['pieces']})" for style, s in r["by_style"].items()))
    return "\n".join(lines)
