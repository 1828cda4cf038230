"""Note-labelled audio for transcription: every track is an audio file plus a MIDI label file.

Two sources (`pitch_notes.sources`), each split by piece so no composition is in two splits:

* **synthetic**: the embedded composer's own works (`pitch_notes.synthetic.seed`, apart from the
  archive's), each rendered `versions` times by the archive's renderer; the labels are the pitched
  notes the renderer placed (lead, comp, bass; drums sound but are not notes). Works are split in
  index order: the first `works.train` train, then val, then test.
* **chorales**: music21's Bach chorales (`musicid.data.chorales`), rendered by fluidsynth with
  tempo, instrumentation, transposition and velocity varied per rendering; the chorales are split by
  a seeded hash rank, `val_share` / `test_share` of them (at least one each when there are three).

Written per source under `data/notes/<source>/`: `audio/<track>.flac` (mono, `sample_rate`),
`labels/<track>.mid` and `tracks.csv` (track, piece, split, duration_s, notes, description).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from musicid.config import PitchNotesConfig, SynthConfig

LABEL_FIELDS = ("onset_s", "offset_s", "pitch", "velocity")  # velocity in [0, 1] (MIDI velocity / 127)
TRACK_FIELDS = ("track", "piece", "split", "duration_s", "notes", "description")
SPLITS = ("train", "val", "test")
SOURCES = ("synthetic", "chorales")


class LabelError(ValueError):
    """A label file that cannot be read as notes (one line: the file and why)."""


@dataclass(frozen=True)
class TrackJob:
    source: str
    track: str
    piece: str
    split: str
    index: int  # work index (synthetic) or rendering index (chorales)
    version: int


def write_labels(notes: np.ndarray, path: Path, program: int = 0) -> None:
    """(n, 4) [onset_s, offset_s, pitch, velocity 0..1] → a one-instrument MIDI file (pretty_midi)."""
    import pretty_midi

    midi = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program)
    for onset, offset, pitch, velocity in np.asarray(notes, dtype=np.float64).reshape(-1, 4):
        inst.notes.append(pretty_midi.Note(velocity=int(np.clip(round(velocity * 127), 1, 127)), pitch=int(pitch),
                                           start=float(onset), end=float(max(offset, onset + 1e-3))))
    midi.instruments.append(inst)
    midi.write(str(path))


def read_labels(path: Path) -> np.ndarray:
    """A MIDI label file → (n, 4) float64 [onset_s, offset_s, pitch, velocity 0..1], sorted; drums left out."""
    import pretty_midi

    try:
        midi = pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # mido/pretty_midi raise many types on a broken file
        raise LabelError(f"{path}: not a readable MIDI file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    rows = [(n.start, n.end, n.pitch, n.velocity / 127) for inst in midi.instruments if not inst.is_drum for n in inst.notes]
    notes = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return notes[np.lexsort((notes[:, 2], notes[:, 0]))] if len(notes) else notes


# ------------------------------------------------------------------------------------------ plans

def synthetic_jobs(cfg: PitchNotesConfig) -> list[TrackJob]:
    jobs, first = [], 0
    for split in SPLITS:
        for w in range(first, first + cfg.synthetic.works.get(split, 0)):
            jobs += [TrackJob("synthetic", f"notes_w{w:04d}_v{v}", f"w{w:04d}", split, w, v)
                     for v in range(cfg.synthetic.versions)]
        first += cfg.synthetic.works.get(split, 0)
    return jobs


def chorale_splits(ids: list[str], cfg: PitchNotesConfig) -> dict[str, str]:
    """Chorale id → split: ranked by a seeded hash, the first test_share test, the next val_share val."""
    ch = cfg.chorales
    ranked = sorted(ids, key=lambda i: hashlib.sha1(f"{ch.seed}:{i}".encode()).hexdigest())
    n = len(ranked)
    n_test = max(1 if n >= 3 and ch.test_share > 0 else 0, round(n * ch.test_share))
    n_val = max(1 if n >= 3 and ch.val_share > 0 else 0, round(n * ch.val_share))
    return {i: ("test" if k < n_test else "val" if k < n_test + n_val else "train") for k, i in enumerate(ranked)}


def chorale_jobs(cfg: PitchNotesConfig, ids: list[str]) -> list[TrackJob]:
    splits = chorale_splits(ids, cfg)
    return [TrackJob("chorales", f"{i}_r{k + 1}", i, splits[i], k, k) for i in ids
            for k in range(cfg.chorales.renderings.get(splits[i], 0))]


# -------------------------------------------------------------------------------------- rendering

def _render_synthetic(job: TrackJob, cfg: PitchNotesConfig) -> tuple[np.ndarray, np.ndarray, str]:
    from musicid.audio.resample import to_model_rate, to_mono
    from musicid.data.synth.compose import compose_work, version_rng, work_rng
    from musicid.data.synth.render import render_version_notes

    syn = cfg.synthetic
    archive = SynthConfig(seed=syn.seed, min_duration_s=min(20.0, syn.max_duration_s), max_duration_s=syn.max_duration_s)
    work = compose_work(job.index, work_rng(syn.seed, job.index))
    audio, sr, meta, notes = render_version_notes(work, job.version, archive, version_rng(syn.seed, job.index, job.version))
    inst = meta["instruments"]
    return (to_model_rate(to_mono(audio), sr, cfg.sample_rate), notes,
            f"{meta['style']}, {meta['tempo_bpm']} bpm, {meta['key']}, lead {inst['lead']}, drums {inst['drums']}")


def _render_chorale(job: TrackJob, cfg: PitchNotesConfig, chorale: Any, midi_path: Path) -> tuple[np.ndarray, str]:
    from musicid.data.chorales import plan_rendering, render_midi, to_midi

    ch = cfg.chorales
    plan = plan_rendering(chorale.id, job.index, ch.seed, tuple(ch.tempo_range), ch.max_transpose, tuple(ch.styles))
    to_midi(chorale, plan).write(str(midi_path))
    audio = render_midi(midi_path, cfg.sample_rate, ch.soundfont)
    return audio, f"{plan.style}, tempo ×{plan.tempo}, transpose {plan.transpose:+d}"


def _write_audio(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import soundfile as sf

    sf.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")


def _run_job(args: tuple[TrackJob, PitchNotesConfig, Any, str]) -> dict[str, Any]:
    job, cfg, chorale, out = args
    root = Path(out)
    label = root / "labels" / f"{job.track}.mid"
    if job.source == "synthetic":
        audio, notes, description = _render_synthetic(job, cfg)
        write_labels(notes, label)
    else:
        audio, description = _render_chorale(job, cfg, chorale, label)
    _write_audio(root / "audio" / f"{job.track}.flac", audio, cfg.sample_rate)
    return {"track": job.track, "piece": job.piece, "split": job.split,
            "duration_s": round(len(audio) / cfg.sample_rate, 3), "notes": len(read_labels(label)),
            "description": description}


def load_chorales(cfg: PitchNotesConfig) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """(chorale id → Chorale, skipped [{file, reason}]) for the first `pieces` usable scores."""
    from musicid.data.chorales import corpus_paths, read_chorale

    kept: dict[str, Any] = {}
    skipped: list[dict[str, str]] = []
    for path in tqdm(corpus_paths(), desc="pitch-notes: chorale scores", unit="score"):
        if cfg.chorales.pieces and len(kept) >= cfg.chorales.pieces:
            break
        try:
            chorale = read_chorale(path)
        except Exception as exc:  # a score music21 cannot read: skip it, say why
            skipped.append({"file": path.name, "reason": f"{type(exc).__name__}: {exc}"[:200]})
            continue
        if chorale is None or not chorale.notes:
            skipped.append({"file": path.name, "reason": "no four vocal parts"})
            continue
        kept[chorale.id] = chorale
    return kept, skipped


def render_source(source: str, cfg: PitchNotesConfig, out: Path, workers: int = 1) -> dict[str, Any]:
    """Render one source's tracks into `out` (audio/, labels/, tracks.csv); returns its summary."""
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    chorales: dict[str, Any] = {}
    skipped: list[dict[str, str]] = []
    if source == "synthetic":
        jobs = synthetic_jobs(cfg)
    else:
        from musicid.data.chorales import find_fluidsynth

        find_fluidsynth(cfg.chorales.soundfont)  # fail before parsing 350 scores
        chorales, skipped = load_chorales(cfg)
        jobs = chorale_jobs(cfg, list(chorales))
    tasks = [(job, cfg, chorales.get(job.piece), str(out)) for job in jobs]
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(tasks), desc=f"pitch-notes: render {source}", unit="track") as bar:
        if workers > 1 and len(tasks) > 1:
            from musicid.parallel import process_pool

            with process_pool(min(workers, len(tasks))) as pool:
                for row in pool.map(_run_job, tasks):
                    rows.append(row)
                    bar.update()
        else:
            for task in tasks:
                rows.append(_run_job(task))
                bar.update()
    write_tracks(out, rows)
    per_split = {s: {"tracks": sum(r["split"] == s for r in rows), "pieces": len({r["piece"] for r in rows if r["split"] == s}),
                     "hours": round(sum(r["duration_s"] for r in rows if r["split"] == s) / 3600, 3),
                     "notes": sum(r["notes"] for r in rows if r["split"] == s)} for s in SPLITS}
    return {"source": source, "tracks": len(rows), "splits": per_split, "skipped_scores": skipped}


def write_tracks(source_dir: Path, rows: list[dict[str, Any]]) -> None:
    """tracks.csv of a source (an unlisted source gets the header alone)."""
    with open(source_dir / "tracks.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=TRACK_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def read_tracks(source_dir: Path) -> list[dict[str, str]]:
    with open(source_dir / "tracks.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def track_style(track: dict[str, str]) -> str:
    """A rendering's instrument style (chorales: `pitch_notes.chorales.styles`; synthetic: the composer's
    style): both renderers write it as the description's first field, so scores can be broken down by it."""
    return (track.get("description") or "").split(",")[0].strip() or "unknown"
