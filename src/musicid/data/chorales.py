"""Bach chorales as note-labelled audio: music21's bundled scores → MIDI (the labels) → fluidsynth audio.

music21 ships its corpus offline (`corpus.getComposer("bach")`). Kept: four-part chorale scores
(.mxl/.xml, and .krn where no .mxl of the same BWV exists); dropped: roman-numeral analyses and
anything without four vocal parts. Repeats are expanded; only Soprano, Alto, Tenor and Bass are
kept (unnamed .krn parts are assigned by mean pitch). A rendering varies tempo (× `tempo_range`),
instrumentation (one of STYLES: GM programs for S, A, T, B), transposition and velocity, and holds
fermatas a little; pretty_midi writes the MIDI file, which is both what fluidsynth renders and the
label file read back by `musicid.families.pitch.notes`.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

VOCAL = ("soprano", "alto", "tenor", "bass")
BASE_QPM = 76.0
DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
STYLES: dict[str, tuple[int, int, int, int]] = {  # GM programs (0-based) for S, A, T, B
    "church_organ": (19, 19, 19, 19),
    "reed_organ": (20, 20, 20, 20),
    "piano": (0, 0, 0, 0),
    "harpsichord": (6, 6, 6, 6),
    "string_ensemble": (48, 48, 48, 48),
    "string_quartet": (40, 40, 41, 42),
    "choir_aahs": (52, 52, 52, 52),
    "brass": (56, 60, 57, 58),
    "woodwinds": (73, 68, 71, 70),
}


class RenderError(RuntimeError):
    """fluidsynth or its soundfont is missing, or a rendering failed (one line, naming what)."""


def natural_key(name: str) -> list:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def chorale_id(path: Path) -> str:
    return path.stem.replace(".", "_")


def corpus_paths() -> list[Path]:
    """The chorale score files of music21's Bach corpus, one per chorale, in BWV order."""
    from music21 import corpus

    scores = [Path(p) for p in corpus.getComposer("bach") if Path(p).suffix in (".mxl", ".xml", ".krn")]
    stems_mxl = {p.stem for p in scores if p.suffix in (".mxl", ".xml")}
    kept = [p for p in scores if not (p.suffix == ".krn" and p.stem in stems_mxl)]
    return sorted(kept, key=lambda p: natural_key(p.name))


def vocal_parts(score: Any) -> tuple[list, str]:
    """(S, A, T, B parts, how they were found): by part name, else the four parts by mean pitch."""
    named: dict[str, Any] = {}
    for part in score.parts:
        name = (part.partName or "").strip().lower()
        for voice in VOCAL:
            if name.startswith(voice) and voice not in named:
                named[voice] = part
    if len(named) == 4:
        return [named[v] for v in VOCAL], "by name"
    parts = list(score.parts)
    if len(parts) != 4:
        return [], "no four vocal parts"
    means = [np.mean([n.pitches[-1].midi for n in p.flatten().notes] or [0]) for p in parts]
    return [parts[i] for i in sorted(range(4), key=lambda i: -means[i])], "by mean pitch"


def part_notes(parts: list) -> tuple[list[tuple[int, float, float, int]], set[float]]:
    """(voice, start, duration, MIDI pitch) of every note in quarter lengths, voice by voice, ties merged
    and grace notes left out; and the ends of the soprano's fermata notes."""
    from music21 import expressions

    notes: list[tuple[int, float, float, int]] = []
    fermatas: set[float] = set()
    for voice, part in enumerate(parts):
        for n in part.stripTies().flatten().notes:
            start, dur = float(n.offset), float(n.quarterLength)
            if dur <= 0:  # grace notes
                continue
            notes += [(voice, round(start, 4), round(dur, 4), int(p.midi)) for p in n.pitches]
            if voice == 0 and any(isinstance(e, expressions.Fermata) for e in n.expressions):
                fermatas.add(round(start + dur, 4))
    return notes, fermatas


@dataclass(frozen=True)
class Chorale:
    """A chorale's notes in quarter lengths: (voice, start, duration, MIDI pitch); fermata ends of the soprano."""

    id: str
    title: str
    notes: tuple[tuple[int, float, float, int], ...]
    fermata_ends: tuple[float, ...]


def read_chorale(path: Path) -> Chorale | None:
    """The four vocal parts of one score (repeats expanded), or None if it has no four vocal parts."""
    from music21 import corpus

    score = corpus.parse(str(path))
    try:
        score = score.expandRepeats()
    except Exception:  # a few files have badly formed repeat marks: use them as written
        pass
    parts, _ = vocal_parts(score)
    if not parts:
        return None
    notes, fermatas = part_notes(parts)
    title = score.metadata.title if score.metadata is not None and score.metadata.title else path.stem
    return Chorale(chorale_id(path), str(title), tuple(sorted(notes, key=lambda x: (x[1], x[0]))), tuple(sorted(fermatas)))


@dataclass(frozen=True)
class RenderPlan:
    """How one rendering of a chorale sounds; drawn from (seed, chorale id, rendering index)."""

    track_id: str
    style: str
    tempo: float
    transpose: int
    velocity: int
    fermata_hold: float
    note_seed: int


def plan_rendering(chorale_id_: str, index: int, seed: int, tempo_range: tuple[float, float],
                   max_transpose: int, styles: tuple[str, ...] = tuple(STYLES)) -> RenderPlan:
    rng = random.Random(f"{seed}:{chorale_id_}:{index}")
    return RenderPlan(track_id=f"{chorale_id_}_r{index + 1}", style=rng.choice(sorted(styles)),
                      tempo=round(rng.uniform(*tempo_range), 3), transpose=rng.randint(-max_transpose, max_transpose),
                      velocity=rng.randint(70, 100), fermata_hold=round(rng.uniform(0.0, 1.0), 3),
                      note_seed=rng.randrange(1 << 30))


def to_midi(chorale: Chorale, plan: RenderPlan) -> Any:
    """The rendering as a pretty_midi.PrettyMIDI: one instrument per voice, times in seconds."""
    import pretty_midi

    qpm = BASE_QPM * plan.tempo
    spq = 60.0 / qpm
    rng = random.Random(plan.note_seed)
    holds = []
    for end in chorale.fermata_ends:
        durs = [d for v, s, d, _ in chorale.notes if v == 0 and abs(s + d - end) < 1e-3]
        holds.append((end, plan.fermata_hold * (durs[0] if durs else 1.0)))

    def seconds(q: float) -> float:
        return (q + sum(h for e, h in holds if e <= q + 1e-6)) * spq

    midi = pretty_midi.PrettyMIDI(initial_tempo=qpm)
    voices = [pretty_midi.Instrument(program=p, name=VOCAL[v]) for v, p in enumerate(STYLES[plan.style])]
    for voice, start, dur, pitch in chorale.notes:
        vel = plan.velocity + (8 if voice == 0 else 0) + rng.randint(-6, 6)
        t0, t1 = seconds(start), seconds(start + dur)
        voices[voice].notes.append(pretty_midi.Note(
            velocity=int(np.clip(vel, 1, 127)), pitch=int(np.clip(pitch + plan.transpose, 0, 127)),
            start=t0, end=max(t0 + 0.05, t1 - 0.02)))  # a small gap: a repeated note re-attacks
    midi.instruments.extend(voices)
    return midi


def find_fluidsynth(soundfont: str | Path = DEFAULT_SOUNDFONT) -> tuple[str, Path]:
    """(fluidsynth executable, soundfont path), or a RenderError saying what to install."""
    exe = shutil.which("fluidsynth")
    if not exe:
        raise RenderError("fluidsynth is not on PATH (apt-get install -y fluidsynth fluid-soundfont-gm; `make install` does)")
    if not Path(soundfont).is_file():
        raise RenderError(f"soundfont {soundfont} not found (apt-get install -y fluid-soundfont-gm, "
                          "or set pitch_notes.chorales.soundfont)")
    return exe, Path(soundfont)


def render_midi(midi_path: Path, sample_rate: int, soundfont: str | Path = DEFAULT_SOUNDFONT) -> np.ndarray:
    """fluidsynth's rendering of a MIDI file as mono float32 at `sample_rate`, peak-normalised to 0.9."""
    import soundfile as sf

    exe, sf2 = find_fluidsynth(soundfont)
    with tempfile.TemporaryDirectory(prefix="musicid-fluidsynth-") as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = [exe, "-ni", "-q", "-g", "0.5", "-r", str(sample_rate), "-T", "wav", "-F", str(wav), str(sf2), str(midi_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wav.is_file():
            raise RenderError(f"fluidsynth failed on {midi_path}: {(proc.stderr or proc.stdout).strip()[-300:]}")
        audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise RenderError(f"fluidsynth wrote {rate} Hz for {midi_path}, asked for {sample_rate}")
    mono = audio.mean(axis=1)
    peak = float(np.abs(mono).max()) if len(mono) else 0.0
    return (mono * (0.9 / peak) if peak > 0 else mono).astype(np.float32)
