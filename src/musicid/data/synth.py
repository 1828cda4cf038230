"""Deterministic synthetic music: the project's built-in dataset of works, each rendered as covers.

Why synthetic: tests, CI and first experiments need audio that behaves like music (harmonic timbres,
rhythm, chord changes, song form) without shipping or downloading copyrighted recordings.

Vocabulary: a *work* is a composition (key, tempo, chord progressions, melody, bass line, drum
groove, song structure with repeated sections). A *version* re-renders a work the way a cover would:
other tempo, key, instruments, mix and small arrangement changes, but the same tune. Fingerprinting
learns "which recording, where in it"; cover identification learns "which composition".

Everything derives from ``SynthConfig.seed`` through independent random streams per (work) and per
(work, version), so one config always yields byte-identical files and growing ``n_works`` never
changes the tracks that already existed.

Layout of this module, one concern per block: random streams -> music theory and composition ->
instruments (timbres) -> drums -> version planning, arrangement and mixing -> encoding -> archive.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import tarfile
import zlib
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import soundfile as sf
from scipy import signal
from tqdm import tqdm

from musicid.config import SynthConfig
from musicid.fsutil import atomic_file

__all__ = [
    "METADATA_COLUMNS",
    "TIMBRES",
    "build_archive",
    "Chord",
    "compose_work",
    "DrumHit",
    "encode_audio",
    "make_kit",
    "Note",
    "Part",
    "plan_version",
    "render_track",
    "render_track_preview",
    "render_version",
    "SectionSpan",
    "synth_note",
    "track_format",
    "track_layout",
    "version_rng",
    "VersionPlan",
    "Work",
    "work_rng",
]

METADATA_COLUMNS = (
    "file", "track_id", "work_id", "version", "title", "duration", "style", "sample_rate",
    "channels", "format", "tempo_bpm", "key", "transpose",
)  # fmt: skip

STEREO_RATE = 44100
MONO_RATE = 22050
PEAK_DBFS = -1.0
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
_SOUNDFILE_FORMATS = {"flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"), "wav": ("WAV", "PCM_16")}
_BEATS_PER_BAR = 4
_SECTION_BARS = {"intro": 4, "verse": 8, "chorus": 8, "bridge": 8, "outro": 4}
_STRUCTURES = (
    ("intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro"),
    ("intro", "verse", "verse", "chorus", "verse", "chorus", "outro"),
    ("intro", "chorus", "verse", "chorus", "bridge", "chorus", "chorus", "outro"),
    ("intro", "verse", "chorus", "verse", "chorus", "outro"),
    ("intro", "verse", "chorus", "bridge", "verse", "chorus", "outro"),
)
_ENCODE_BLOCK = 65536  # libsndfile's Vorbis encoder crashes on very large single writes

# ----------------------------------------------------------------------------------------------
# Random streams
# ----------------------------------------------------------------------------------------------

_TAG_WORK, _TAG_VERSION, _TAG_PALETTE = 1, 2, 3


def _stream(seed: int, *key: int) -> np.random.Generator:
    """One independent generator per purpose, so adding draws in one place never shifts another."""
    return np.random.default_rng([seed % 2**64, *key])


def work_rng(seed: int, work_index: int) -> np.random.Generator:
    """The composition stream of one work; independent of n_works and of every version."""
    return _stream(seed, _TAG_WORK, work_index)


def version_rng(seed: int, work_index: int, version_index: int) -> np.random.Generator:
    """The rendering stream of one version; independent of versions_per_work."""
    return _stream(seed, _TAG_VERSION, work_index, version_index)


# ----------------------------------------------------------------------------------------------
# Composition: data model
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    """A pitched event. `pitch` is semitones above the part's reference, so transposing is one add."""

    start: float  # beats from the section start
    dur: float  # beats
    pitch: int
    vel: float


@dataclass(frozen=True)
class Chord:
    """A diatonic chord; `tones` are semitones above the tonic, root first, ascending."""

    start: float
    dur: float
    degree: int
    tones: tuple[int, ...]


@dataclass(frozen=True)
class DrumHit:
    start: float  # beats from the section start
    piece: str
    vel: float


@dataclass(frozen=True)
class Part:
    """The material of one section type; every occurrence of that section replays this object."""

    name: str
    bars: int
    chords: tuple[Chord, ...]
    melody: tuple[Note, ...]
    bass: tuple[Note, ...]
    drums: tuple[DrumHit, ...]


@dataclass(frozen=True)
class SectionSpan:
    name: str
    start_bar: int
    bars: int


@dataclass(frozen=True, eq=False)
class Work:
    """A composition: everything that all of its versions share."""

    index: int
    title: str
    style: str
    tonic: int  # pitch class, 0 = C
    mode: str  # "major" | "minor"
    tempo_bpm: float
    melody_ref: int  # MIDI note of the tonic in the melody register
    bass_ref: int  # MIDI note of the tonic in the bass register
    structure: tuple[str, ...]
    parts: dict[str, Part]

    @property
    def work_id(self) -> str:
        return f"w{self.index:04d}"

    @property
    def key(self) -> str:
        return f"{NOTE_NAMES[self.tonic]} {self.mode}"

    @property
    def sections(self) -> tuple[SectionSpan, ...]:
        """The song form in bars, e.g. intro at bar 0, verse at bar 4, ..."""
        spans, bar = [], 0
        for name in self.structure:
            spans.append(SectionSpan(name, bar, self.parts[name].bars))
            bar += self.parts[name].bars
        return tuple(spans)

    def section_times(self, tempo_bpm: float | None = None) -> list[tuple[str, float]]:
        """(section name, start in seconds) at the work's tempo or at another version's tempo."""
        seconds_per_bar = _BEATS_PER_BAR * 60.0 / (tempo_bpm or self.tempo_bpm)
        return [(span.name, span.start_bar * seconds_per_bar) for span in self.sections]


@dataclass(frozen=True)
class StyleSpec:
    """What a genre label implies: tempo range, harmony colour, grooves and instrument palettes."""

    tempo: tuple[float, float]
    minor_prob: float
    seventh_prob: float
    eighth_prob: float  # melody: chance to split a beat into two eighths
    sustain_prob: float  # melody: chance of a half note on strong beats
    bass_patterns: tuple[str, ...]
    kit: str  # "acoustic" | "electronic"
    fills: tuple[str, ...]
    leads: tuple[str, ...]
    comps: tuple[tuple[str, str], ...]  # (timbre, comping pattern)
    basses: tuple[str, ...]


_STYLES: dict[str, StyleSpec] = {
    "pop": StyleSpec(
        (92, 128), 0.35, 0.15, 0.45, 0.2, ("pop", "eighths"), "acoustic", ("roll", "toms"),
        ("saw_lead", "fm_piano", "square_lead", "pluck"),
        (("soft_pad", "sustain"), ("pluck", "arp"), ("fm_piano", "pulse")),
        ("finger_bass", "synth_bass"),
    ),
    "rock": StyleSpec(
        (110, 152), 0.4, 0.0, 0.5, 0.15, ("rock", "eighths"), "acoustic", ("toms", "roll"),
        ("square_lead", "saw_lead", "organ"),
        (("organ", "pulse"), ("pluck", "strum"), ("saw_pad", "sustain")),
        ("finger_bass", "synth_bass"),
    ),
    "ballad": StyleSpec(
        (66, 86), 0.45, 0.5, 0.3, 0.35, ("long", "pop"), "acoustic", ("sparse", "toms"),
        ("flute", "fm_piano", "pluck"),
        (("pluck", "arp"), ("string_pad", "sustain"), ("fm_piano", "arp")),
        ("sub_bass", "finger_bass"),
    ),
    "electronic": StyleSpec(
        (118, 136), 0.5, 0.2, 0.55, 0.15, ("offbeat", "eighths"), "electronic", ("roll",),
        ("saw_lead", "square_lead", "bell"),
        (("saw_pad", "stabs"), ("string_pad", "sustain"), ("pluck", "arp16")),
        ("synth_bass", "sub_bass"),
    ),
    "folk": StyleSpec(
        (88, 122), 0.4, 0.1, 0.45, 0.25, ("boom", "long"), "acoustic", ("sparse", "roll"),
        ("flute", "pluck", "accordion"),
        (("pluck", "strum"), ("accordion", "pulse"), ("organ", "sustain")),
        ("finger_bass", "sub_bass"),
    ),
}  # fmt: skip

_ADJECTIVES = (
    "Golden", "Silver", "Midnight", "Electric", "Quiet", "Broken", "Endless", "Distant", "Crimson",
    "Velvet", "Wild", "Hidden", "Lonely", "Bright", "Northern", "Summer", "Winter", "Paper", "Neon",
    "Faded", "Burning", "Silent", "Falling", "Restless", "Sweet", "Blue", "Little", "Secret",
    "Hollow", "Gentle", "Morning", "Autumn", "Salt", "Glass", "Open", "Last", "Painted", "Empty",
)  # fmt: skip
_NOUNS = (
    "River", "Train", "Heart", "Sky", "Road", "Garden", "Ocean", "Lights", "Dreams", "Fire", "Moon",
    "City", "Rain", "Horizon", "Window", "Letter", "Harbor", "Mountain", "Echo", "Stars", "Shadows",
    "Highway", "Tide", "Song", "Door", "Bridge", "Island", "Kingdom", "Mirror", "Valley", "Wire",
    "Lanterns", "Sparrow", "Avenue", "Postcard", "Ember", "Meadow", "Satellite",
)  # fmt: skip

# ----------------------------------------------------------------------------------------------
# Composition: harmony
# ----------------------------------------------------------------------------------------------

# Scale degrees, 0-based (0 = I/i, 4 = V/v, 5 = vi/VI ...): progressions listeners recognise.
_PROGRESSIONS = {
    "major": (
        (0, 4, 5, 3), (5, 3, 0, 4), (0, 5, 3, 4), (0, 3, 4, 3), (1, 4, 0, 5), (0, 3, 5, 4),
        (3, 0, 4, 5), (0, 2, 3, 4), (0, 4, 3, 4), (5, 4, 3, 4), (0, 3, 0, 4), (3, 4, 2, 5),
    ),
    "minor": (
        (0, 5, 2, 6), (0, 6, 5, 6), (0, 3, 4, 0), (0, 5, 3, 4), (0, 3, 6, 2), (5, 6, 0, 0),
        (0, 6, 5, 4), (3, 4, 0, 5), (0, 2, 6, 3), (0, 3, 0, 4), (0, 5, 6, 4), (3, 6, 2, 5),
    ),
}  # fmt: skip
# Functional harmony as a walk: tonic -> subdominant/dominant -> tonic, with common substitutes.
_NEXT_DEGREE = {
    0: (3, 4, 5, 1, 2), 1: (4, 6, 3), 2: (5, 3), 3: (4, 0, 1, 5), 4: (0, 5, 3), 5: (3, 1, 4, 2), 6: (0, 2, 5),
}  # fmt: skip


def _diminished_degree(mode: str) -> int:
    return 6 if mode == "major" else 1


def _walk_progression(rng: np.random.Generator, mode: str, first: int, n: int) -> tuple[int, ...]:
    """n chords by functional harmony, avoiding the diminished triad and immediate repeats."""
    seq = [first]
    while len(seq) < n:
        options = [d for d in _NEXT_DEGREE[seq[-1]] if d not in (seq[-1], _diminished_degree(mode))] or [0]
        if len(seq) == n - 1 and first == 0 and 4 in options and rng.random() < 0.6:
            seq.append(4)  # end on the dominant so the loop turns back to the tonic
        else:
            seq.append(int(rng.choice(options)))
    return tuple(seq)


def _progression(rng: np.random.Generator, mode: str, first: int | None = None) -> tuple[int, ...]:
    """A 4-8 chord loop: a familiar template (possibly extended) or a functional random walk."""
    n = int(rng.integers(4, 9))
    templates = _PROGRESSIONS[mode]
    if first is None and n in (4, 8) and rng.random() < 0.7:
        base = templates[int(rng.integers(len(templates)))]
        return base if n == 4 else base + _walk_progression(rng, mode, base[0], 4)
    start = first if first is not None else int(rng.choice([0, 0, 5, 3]))
    return _walk_progression(rng, mode, start, n)


def _chord_tones(degree: int, mode: str, seventh: bool, raised_v: bool) -> tuple[int, ...]:
    """Stack scale thirds on a degree; in minor the V chord may borrow the leading tone."""
    scale = SCALES[mode]
    tones = [scale[(degree + k) % 7] + 12 * ((degree + k) // 7) for k in ((0, 2, 4, 6) if seventh else (0, 2, 4))]
    if raised_v and degree == 4:
        tones[1] += 1
    return tuple(tones)


def _cycle_durations(rng: np.random.Generator, n: int) -> list[float]:
    """Chord lengths in beats: a 4-bar loop (some bars split in two) or 8 chords of one bar."""
    if n == 4:
        return [4.0] * 4
    if n == 8:
        return [4.0] * 8 if rng.random() < 0.5 else [2.0] * 8
    split = set(rng.choice(4, size=n - 4, replace=False).tolist())
    return [d for bar in range(4) for d in ((2.0, 2.0) if bar in split else (4.0,))]


@dataclass(frozen=True)
class Harmony:
    """One section's chord loop before it is laid out over bars."""

    degrees: tuple[int, ...]
    durations: tuple[float, ...]


def _lay_chords(
    harmony: Harmony, bars: int, mode: str, seventh: bool, raised_v: bool, end_on_tonic: bool = False
) -> tuple[Chord, ...]:
    """Tile the loop over the section; an outro's last bar resolves to the tonic."""
    total, chords, t, i = bars * _BEATS_PER_BAR, [], 0.0, 0
    while t < total:
        dur = min(harmony.durations[i % len(harmony.durations)], total - t)
        degree = harmony.degrees[i % len(harmony.degrees)]
        chords.append(Chord(t, dur, degree, _chord_tones(degree, mode, seventh, raised_v)))
        t, i = t + dur, i + 1
    if end_on_tonic:
        cut = total - _BEATS_PER_BAR
        chords = [Chord(c.start, min(c.dur, cut - c.start), c.degree, c.tones) for c in chords if c.start < cut]
        chords.append(Chord(cut, float(_BEATS_PER_BAR), 0, _chord_tones(0, mode, seventh, raised_v)))
    return tuple(chords)


def _chord_at(chords: tuple[Chord, ...], beat: float) -> int:
    """Index of the chord sounding at `beat` (section-relative)."""
    for i, chord in enumerate(chords):
        if chord.start <= beat + 1e-9 < chord.start + chord.dur:
            return i
    return len(chords) - 1


# ----------------------------------------------------------------------------------------------
# Composition: melody
# ----------------------------------------------------------------------------------------------

_STEPS = np.array([-4, -3, -2, -1, 0, 1, 2, 3, 4])
_STEP_P = np.array([0.03, 0.07, 0.15, 0.22, 0.08, 0.22, 0.15, 0.05, 0.03])
_MELODY_RANGE = (-3, 11)  # scale degrees around the tonic: a singable octave and a half


@dataclass(frozen=True)
class Motif:
    """A two-bar phrase: rhythm as (onset, duration) in beats plus a contour in scale steps."""

    rhythm: tuple[tuple[float, float], ...]
    steps: tuple[int, ...]


def _motif(rng: np.random.Generator, eighth_prob: float, sustain_prob: float) -> Motif:
    """Random rhythm cells (quarters, eighths, dotted, half notes, rests) ending on a long note."""
    rhythm: list[tuple[float, float]] = []
    beat = 0.0
    while beat < 6:
        if beat > 0 and rng.random() < 0.07:
            beat += 1  # a breath
            continue
        r = rng.random()
        if beat % 2 == 0 and beat <= 4 and r < sustain_prob:
            rhythm.append((beat, 2.0))
            beat += 2
        elif r < sustain_prob + eighth_prob:
            rhythm += [(beat, 0.5), (beat + 0.5, 0.5)]
            beat += 1
        elif r < sustain_prob + eighth_prob + 0.12 and beat <= 4:
            rhythm += [(beat, 1.5), (beat + 1.5, 0.5)]
            beat += 2
        else:
            rhythm.append((beat, 1.0))
            beat += 1
    rhythm.append((6.0, 1.5))
    if rng.random() < 0.35:
        rhythm.append((7.5, 0.5))  # pickup into the next phrase
    steps = (0,) + tuple(int(s) for s in rng.choice(_STEPS, size=len(rhythm) - 1, p=_STEP_P))
    return Motif(tuple(rhythm), steps)


def _vary(rng: np.random.Generator, motif: Motif) -> Motif:
    """Same rhythm, new ending contour: the answer to the motif's question."""
    steps = list(motif.steps)
    for i in range(max(1, len(steps) - 2), len(steps)):
        steps[i] = int(rng.choice(_STEPS, p=_STEP_P))
    return Motif(motif.rhythm, tuple(steps))


def _cadence(motif: Motif) -> Motif:
    """Drop the pickup and hold the last note to the end of the phrase."""
    rhythm = [r for r in motif.rhythm if r[0] < 7.0]
    rhythm[-1] = (rhythm[-1][0], 8.0 - rhythm[-1][0])
    return Motif(tuple(rhythm), motif.steps[: len(rhythm)])


def _reflect(degree: int, lo: int, hi: int) -> int:
    while not lo <= degree <= hi:
        degree = 2 * hi - degree if degree > hi else 2 * lo - degree
    return degree


def _snap(degree: int, chord: Chord, roots_only: bool = False) -> int:
    """Nearest scale degree that is a chord tone (or the root), so strong beats are consonant."""
    members = {(chord.degree + k) % 7 for k in ((0,) if roots_only else range(0, 2 * len(chord.tones), 2))}
    for offset in (0, -1, 1, -2, 2, -3, 3):
        if (degree + offset) % 7 in members:
            return degree + offset
    return degree


def _degree_semitones(degree: int, mode: str, chord: Chord) -> int:
    semis = SCALES[mode][degree % 7] + 12 * (degree // 7)
    if mode == "minor" and degree % 7 == 6 and chord.degree == 4 and 11 in {t % 12 for t in chord.tones}:
        semis += 1  # leading tone over a major V
    return semis


def _realise(
    motif: Motif, start: float, chords: tuple[Chord, ...], anchor: int, mode: str, cadence: bool
) -> list[Note]:
    """Walk the contour from `anchor`, snapping strong beats to the chord that sounds under them."""
    notes, degree = [], anchor
    lo, hi = _MELODY_RANGE
    for i, ((onset, dur), step) in enumerate(zip(motif.rhythm, motif.steps)):
        beat = start + onset
        chord = chords[_chord_at(chords, beat)]
        degree = _reflect(degree + step, lo, hi)
        if onset % 2 == 0 or dur >= 1.5:
            degree = _snap(degree, chord)
        if cadence and i == len(motif.rhythm) - 1:
            degree = _snap(degree, chord, roots_only=True)
        vel = 0.95 if onset % 4 == 0 else (0.85 if onset % 1 == 0 else 0.72)
        notes.append(Note(beat, dur, _degree_semitones(degree, mode, chord), vel))
    return notes


def _section_melody(
    rng: np.random.Generator, motif: Motif, chords: tuple[Chord, ...], bars: int, anchor: int, mode: str
) -> tuple[Note, ...]:
    """Phrases A A' A B (B ends on a chord root): repetition with variation is what makes a tune."""
    answer = _vary(rng, motif)
    phrases = max(1, bars // 2)
    notes: list[Note] = []
    for p in range(phrases):
        last = p == phrases - 1
        phrase = answer if p % 2 else motif
        notes += _realise(_cadence(phrase) if last else phrase, 8.0 * p, chords, anchor, mode, cadence=last)
    return tuple(n for n in notes if n.start < bars * _BEATS_PER_BAR)


# ----------------------------------------------------------------------------------------------
# Composition: bass and drums
# ----------------------------------------------------------------------------------------------

# One bar of (onset, duration, role); R root, 5 fifth, O octave, P approach to the next root.
_BASS_PATTERNS = {
    "eighths": tuple((i * 0.5, 0.45, "R") for i in range(7)) + ((3.5, 0.45, "P"),),
    "rock": ((0, 0.5, "R"), (0.5, 0.5, "R"), (1, 0.5, "R"), (1.5, 0.5, "R"), (2, 0.5, "R"), (2.5, 0.5, "O"),
             (3, 0.5, "R"), (3.5, 0.5, "P")),
    "pop": ((0, 1.5, "R"), (1.5, 0.5, "R"), (2, 1.0, "R"), (3, 0.5, "5"), (3.5, 0.5, "P")),
    "long": ((0, 2.0, "R"), (2, 1.5, "5"), (3.5, 0.5, "P")),
    "offbeat": ((0, 0.25, "R"), (0.5, 0.45, "R"), (1.5, 0.45, "O"), (2.5, 0.45, "R"), (3.5, 0.45, "O")),
    "boom": ((0, 1.0, "R"), (2, 1.0, "5"), (3.5, 0.5, "P")),
}  # fmt: skip


def _fold_bass(semitones: int) -> int:
    """Keep roots within a fourth below to a tritone above the tonic: no big register jumps."""
    semitones %= 12
    return semitones - 12 if semitones > 6 else semitones


def _bass_line(
    rng: np.random.Generator, chords: tuple[Chord, ...], pattern: str, bars: int, mode: str
) -> tuple[Note, ...]:
    """Chord roots in the style's rhythm, with fifths, octaves and approach notes into changes."""
    scale, notes = SCALES[mode], []
    for bar in range(bars):
        for onset, dur, role in _BASS_PATTERNS[pattern]:
            beat = bar * _BEATS_PER_BAR + onset
            ci = _chord_at(chords, beat)
            chord = chords[ci]
            end = min(beat + dur, chord.start + chord.dur)
            root = _fold_bass(chord.tones[0])
            pitch = {"R": root, "5": root + 7 if root <= 2 else root - 5, "O": root + 12}.get(role, root)
            if role == "P" and ci + 1 < len(chords) and abs(chords[ci + 1].start - (beat + dur)) < 1e-6:
                nxt = chords[ci + 1]
                target = _fold_bass(nxt.tones[0])
                if target != root:
                    below = target > root
                    if rng.random() < 0.5:
                        pitch = target - 1 if below else target + 1  # chromatic approach
                    else:
                        step = nxt.degree - 1 if below else nxt.degree + 1
                        pitch = target + (scale[step % 7] + 12 * (step // 7) - scale[nxt.degree])
            vel = 1.0 if onset == 0 else 0.8
            notes.append(Note(beat, max(end - beat, 0.1), pitch, vel))
    return tuple(notes)


_EIGHTHS = tuple(range(0, 16, 2))
_SIXTEENTHS = tuple(range(16))
# Positions in sixteenths per bar: (verse groove, chorus groove).
_GROOVES: dict[str, tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]] = {
    "rock": ({"kick": (0, 8, 10), "snare": (4, 12), "hat": _EIGHTHS},
             {"kick": (0, 6, 8, 10), "snare": (4, 12), "ride": _EIGHTHS, "open_hat": (14,)}),
    "pop": ({"kick": (0, 6, 8), "snare": (4, 12), "hat": _EIGHTHS},
            {"kick": (0, 6, 8, 11), "snare": (4, 12), "hat": _SIXTEENTHS}),
    "ballad": ({"kick": (0, 10), "snare": (8,), "hat": _EIGHTHS},
               {"kick": (0, 6, 10), "snare": (4, 12), "ride": _EIGHTHS}),
    "electronic": ({"kick": (0, 4, 8, 12), "clap": (4, 12), "hat": _SIXTEENTHS},
                   {"kick": (0, 4, 8, 12), "clap": (4, 12), "hat": _SIXTEENTHS, "open_hat": (2, 6, 10, 14)}),
    "folk": ({"kick": (0, 8), "snare": (4, 12), "shaker": _EIGHTHS},
             {"kick": (0, 8, 10), "snare": (4, 12), "shaker": _SIXTEENTHS, "hat": (2, 6, 10, 14)}),
}  # fmt: skip
_FILLS = {
    "roll": (("snare", 8, 0.5), ("snare", 10, 0.6), ("snare", 12, 0.7), ("snare", 13, 0.75),
             ("snare", 14, 0.85), ("snare", 15, 1.0)),
    "toms": (("tom_hi", 8, 0.8), ("tom_hi", 10, 0.8), ("tom_mid", 12, 0.85), ("tom_mid", 13, 0.8),
             ("tom_lo", 14, 0.95), ("tom_lo", 15, 0.9)),
    "sparse": (("snare", 12, 0.6), ("kick", 14, 0.8), ("snare", 14, 0.8), ("snare", 15, 0.7)),
}  # fmt: skip
_CYMBALS = ("hat", "open_hat", "ride", "crash", "shaker")


def _drum_velocity(piece: str, pos: int) -> float:
    if piece in ("hat", "shaker", "ride"):
        return 0.8 if pos % 4 == 0 else (0.55 if pos % 2 == 0 else 0.35)
    if piece == "kick":
        return 1.0 if pos == 0 else 0.85
    return 0.9


def _drum_part(style: str, name: str, bars: int, fill: str, ghosts: bool) -> tuple[DrumHit, ...]:
    """The style's groove per bar, busier in choruses, half-time in bridges, a fill before changes."""
    verse, chorus = _GROOVES[style]
    groove = dict(chorus if name == "chorus" else verse)
    if name == "bridge":  # half-time feel
        groove["kick"] = (0, 10)
        if "snare" in groove:
            groove["snare"] = (8,)
    if name == "intro":
        groove = {k: v for k, v in groove.items() if k not in ("snare", "clap")}
    hits: list[DrumHit] = []
    for bar in range(bars):
        base = bar * _BEATS_PER_BAR
        if name == "outro" and bar == bars - 1:
            hits += [DrumHit(base, "kick", 1.0), DrumHit(base, "crash", 0.9)]
            continue
        fill_here = bar == bars - 1
        fill_from = 12 if name == "intro" else 8
        for piece, positions in groove.items():
            for pos in positions:
                if fill_here and pos >= fill_from and piece != "kick":
                    continue
                hits.append(DrumHit(base + pos / 4, piece, _drum_velocity(piece, pos)))
        if ghosts and name == "verse" and bar % 2 == 1 and not fill_here:
            hits.append(DrumHit(base + 14 / 4, "snare", 0.25))
        if fill_here:
            hits += [DrumHit(base + pos / 4, piece, vel) for piece, pos, vel in _FILLS[fill] if pos >= fill_from]
    if name in ("chorus", "bridge", "outro"):
        hits.append(DrumHit(0.0, "crash", 0.85))
    return tuple(sorted(hits, key=lambda h: (h.start, h.piece)))


# ----------------------------------------------------------------------------------------------
# Composition: the whole work
# ----------------------------------------------------------------------------------------------


def _title(rng: np.random.Generator) -> str:
    adjective, noun = str(rng.choice(_ADJECTIVES)), str(rng.choice(_NOUNS))
    return f"The {adjective} {noun}" if rng.random() < 0.15 else f"{adjective} {noun}"


def _fit_register(midi: int, lo: int, hi: int) -> int:
    while midi < lo:
        midi += 12
    while midi > hi:
        midi -= 12
    return midi


def compose_work(work_index: int, rng: np.random.Generator) -> Work:
    """Write one composition: key, tempo, style, harmony per section, melody, bass, drums, form.

    Repeated sections share one `Part`, so every chorus of every version carries the same tune.
    """
    style_name = str(rng.choice(sorted(_STYLES)))
    style = _STYLES[style_name]
    mode = "minor" if rng.random() < style.minor_prob else "major"
    tonic = int(rng.integers(12))
    tempo = float(round(rng.uniform(*style.tempo)))
    structure = _STRUCTURES[int(rng.integers(len(_STRUCTURES)))]
    seventh = bool(rng.random() < style.seventh_prob)
    raised_v = bool(mode == "minor" and rng.random() < 0.5)
    title = _title(rng)

    verse_h = _progression(rng, mode)
    chorus_h = _progression(rng, mode)
    for _ in range(5):
        if chorus_h != verse_h:
            break
        chorus_h = _progression(rng, mode)
    bridge_h = _progression(rng, mode, first=int(rng.choice([3, 5] if mode == "major" else [3, 5, 6])))
    harmonies = {
        name: Harmony(degrees, tuple(_cycle_durations(rng, len(degrees))))
        for name, degrees in (("verse", verse_h), ("chorus", chorus_h), ("bridge", bridge_h))
    }
    harmonies["intro"] = harmonies["outro"] = harmonies["chorus"]

    verse_motif = _motif(rng, style.eighth_prob, style.sustain_prob * 0.6)
    chorus_motif = _motif(rng, style.eighth_prob * 0.7, style.sustain_prob * 1.5)
    bridge_motif = _motif(rng, style.eighth_prob, style.sustain_prob)
    verse_anchor = int(rng.choice([0, 2, 4]))
    chorus_anchor = verse_anchor + int(rng.choice([2, 3, 4]))
    anchors = {"verse": verse_anchor, "chorus": chorus_anchor, "bridge": int(rng.choice([1, 3, 5])),
               "intro": chorus_anchor, "outro": chorus_anchor}  # fmt: skip
    motifs = {"verse": verse_motif, "chorus": chorus_motif, "bridge": bridge_motif,
              "intro": chorus_motif, "outro": chorus_motif}  # fmt: skip
    bass_pattern = str(rng.choice(style.bass_patterns))
    fill = str(rng.choice(style.fills))
    ghosts = bool(style_name in ("rock", "pop") and rng.random() < 0.5)

    parts: dict[str, Part] = {}
    for name in dict.fromkeys(structure):
        bars = _SECTION_BARS[name]
        chords = _lay_chords(harmonies[name], bars, mode, seventh, raised_v, end_on_tonic=name == "outro")
        parts[name] = Part(
            name=name,
            bars=bars,
            chords=chords,
            melody=_section_melody(rng, motifs[name], chords, bars, anchors[name], mode),
            bass=_bass_line(rng, chords, "long" if name == "outro" else bass_pattern, bars, mode),
            drums=_drum_part(style_name, name, bars, fill, ghosts),
        )
    return Work(
        index=work_index,
        title=title,
        style=style_name,
        tonic=tonic,
        mode=mode,
        tempo_bpm=tempo,
        melody_ref=_fit_register(60 + tonic, 54, 65),
        bass_ref=_fit_register(36 + tonic, 35, 46),
        structure=structure,
        parts=parts,
    )


# ----------------------------------------------------------------------------------------------
# Instruments: band-limited wavetables, envelopes, a small catalogue of timbres
# ----------------------------------------------------------------------------------------------

_TABLE_SIZE = 4096


@dataclass(frozen=True)
class Timbre:
    """A recipe for one instrument voice.

    kind "wave": static spectrum under an ADSR; "pluck": a bright spectrum that dies fast over a
    darker body that rings (string/piano-like); "fm": two-operator FM with a decaying index (bells,
    electric piano). Detuned voices, vibrato and tremolo make sustained tones sound played.
    """

    kind: str
    harmonics: tuple[float, ...] = (1.0,)
    body: tuple[float, ...] = (1.0,)
    attack: float = 0.01
    decay: float = 0.2
    sustain: float = 0.8
    release: float = 0.1
    voices: int = 1
    detune_cents: float = 0.0
    vibrato_hz: float = 0.0
    vibrato_depth: float = 0.0
    vibrato_delay: float = 0.25
    tremolo_hz: float = 0.0
    tremolo_depth: float = 0.0
    bright_time: float = 0.1
    ring_time: float = 1.0
    fm_ratio: float = 1.0
    fm_index: float = 0.0
    fm_index_time: float = 0.3
    level: float = 1.0


def _saw(n: int, rolloff: float) -> tuple[float, ...]:
    return tuple(float(np.exp(-k / rolloff) / k) for k in range(1, n + 1))


def _odd(n: int, rolloff: float) -> tuple[float, ...]:
    return tuple(float(np.exp(-k / rolloff) / k) if k % 2 else 0.0 for k in range(1, n + 1))


def _plucked(n: int, position: float) -> tuple[float, ...]:
    """Spectrum of a string plucked at `position` of its length: the comb of sin(pi k p) / k."""
    return tuple(float(abs(np.sin(np.pi * k * position)) / k) for k in range(1, n + 1))


TIMBRES: dict[str, Timbre] = {
    "saw_lead": Timbre("wave", _saw(30, 14.0), attack=0.012, decay=0.3, sustain=0.7, release=0.12, voices=2,
                       detune_cents=7, vibrato_hz=5.5, vibrato_depth=0.004, level=0.8),
    "square_lead": Timbre("wave", _odd(25, 10.0), attack=0.02, decay=0.25, sustain=0.8, release=0.1, voices=2,
                          detune_cents=5, vibrato_hz=5.0, vibrato_depth=0.003, level=0.85),
    "flute": Timbre("wave", (1.0, 0.35, 0.12, 0.06, 0.03), attack=0.06, decay=0.2, sustain=0.85, release=0.15,
                    vibrato_hz=4.8, vibrato_depth=0.005, vibrato_delay=0.15, tremolo_hz=4.8, tremolo_depth=0.08),
    "organ": Timbre("wave", (1.0, 0.8, 0.6, 0.5, 0.0, 0.3, 0.0, 0.25), attack=0.006, decay=0.05, sustain=1.0,
                    release=0.05, tremolo_hz=6.3, tremolo_depth=0.12, level=0.75),
    "accordion": Timbre("wave", (1.0, 0.6, 0.5, 0.35, 0.3, 0.2, 0.15, 0.1, 0.08, 0.05), attack=0.03, decay=0.1,
                        sustain=0.9, release=0.08, voices=2, detune_cents=9, level=0.75),
    "soft_pad": Timbre("wave", (1.0, 0.25, 0.1, 0.05), attack=0.35, decay=0.6, sustain=0.8, release=0.7,
                       voices=3, detune_cents=10, level=0.8),
    "string_pad": Timbre("wave", _saw(16, 6.0), attack=0.2, decay=0.4, sustain=0.85, release=0.5, voices=3,
                         detune_cents=12, vibrato_hz=5.0, vibrato_depth=0.002, level=0.75),
    "saw_pad": Timbre("wave", _saw(20, 8.0), attack=0.008, decay=0.15, sustain=0.6, release=0.15, voices=3,
                      detune_cents=15, level=0.7),
    "pluck": Timbre("pluck", _plucked(30, 0.21), (1.0, 0.35, 0.12, 0.05), attack=0.002, sustain=1.0,
                    release=0.08, bright_time=0.12, ring_time=0.9),
    "fm_piano": Timbre("fm", attack=0.003, sustain=1.0, release=0.12, ring_time=1.4, fm_ratio=1.0, fm_index=2.2,
                       fm_index_time=0.35),
    "bell": Timbre("fm", attack=0.002, sustain=1.0, release=0.3, ring_time=2.0, fm_ratio=3.5, fm_index=2.5,
                   fm_index_time=0.6, level=0.8),
    "finger_bass": Timbre("pluck", (1.0, 0.6, 0.4, 0.25, 0.15, 0.1, 0.06, 0.04), (1.0, 0.3, 0.08),
                          attack=0.004, sustain=1.0, release=0.06, bright_time=0.08, ring_time=1.6),
    "synth_bass": Timbre("pluck", _saw(24, 10.0), (1.0, 0.5, 0.25, 0.1), attack=0.004, decay=0.3, sustain=0.85,
                         release=0.05, bright_time=0.07, ring_time=6.0, level=0.9),
    "sub_bass": Timbre("wave", (1.0, 0.3, 0.1), attack=0.006, decay=0.2, sustain=0.8, release=0.06),
}  # fmt: skip


@lru_cache(maxsize=256)
def _wavetable(harmonics: tuple[float, ...], n_harmonics: int) -> np.ndarray:
    """One period holding only harmonics below Nyquist for this pitch (no aliasing), peak 1."""
    spectrum = np.zeros(_TABLE_SIZE // 2 + 1, dtype=np.complex128)
    amps = np.asarray(harmonics[: max(1, n_harmonics)], dtype=np.float64)
    spectrum[1 : 1 + len(amps)] = -1j * amps * (_TABLE_SIZE / 2)
    table = np.fft.irfft(spectrum, _TABLE_SIZE)
    table /= max(np.abs(table).max(), 1e-9)
    return np.append(table, table[0]).astype(np.float32)


def _read_table(table: np.ndarray, cycles: np.ndarray) -> np.ndarray:
    """Linear-interpolated lookup of phase (in cycles) into a wavetable."""
    pos = cycles * _TABLE_SIZE
    idx = pos.astype(np.int64)
    frac = (pos - idx).astype(np.float32)
    idx &= _TABLE_SIZE - 1
    lo = table[idx]
    return lo + frac * (table[idx + 1] - lo)


def _phase(f0: float, t: np.ndarray, tb: Timbre, detune_cents: float, offset: float) -> np.ndarray:
    """Phase in cycles, with delayed vibrato (integrated sinusoidal frequency modulation)."""
    f = f0 * 2 ** (detune_cents / 1200)
    cycles = f * t + offset
    if tb.vibrato_depth:
        ramp = np.clip((t - tb.vibrato_delay) / 0.3, 0.0, 1.0)
        swing = f * tb.vibrato_depth / (2 * np.pi * tb.vibrato_hz)
        cycles += ramp * swing * (1 - np.cos(2 * np.pi * tb.vibrato_hz * t))
    return cycles


def _envelope(tb: Timbre, t: np.ndarray, gate_n: int) -> np.ndarray:
    """ADSR with an exponential decay and a release that reaches exactly zero (no clicks)."""
    attack = max(tb.attack, 1e-3)
    env = np.minimum(t / attack, 1.0)
    if tb.sustain < 1.0:
        env *= tb.sustain + (1 - tb.sustain) * np.exp(-np.maximum(t - attack, 0.0) / max(tb.decay, 1e-3))
    if gate_n < len(t):
        level = env[max(gate_n - 1, 0)]
        tr = t[gate_n:] - t[gate_n]
        env[gate_n:] = level * np.exp(-4 * tr / tb.release) * np.maximum(1 - tr / tb.release, 0.0)
    return env


def _ring_time(tb: Timbre, f0: float) -> float:
    """Higher strings and bars ring shorter, as they do on real instruments."""
    return float(np.clip(tb.ring_time * np.sqrt(220.0 / f0), 0.12, 4.0))


def _harmonic_voices(tb: Timbre, f0: float, t: np.ndarray, sr: int) -> np.ndarray:
    nyquist_harmonics = int(0.45 * sr / (f0 * 2 ** (abs(tb.detune_cents) / 1200)))
    bright = _wavetable(tb.harmonics, min(len(tb.harmonics), nyquist_harmonics))
    body = _wavetable(tb.body, min(len(tb.body), nyquist_harmonics)) if tb.kind == "pluck" else None
    out = np.zeros(len(t), dtype=np.float32)
    for v in range(tb.voices):
        spread = (v - (tb.voices - 1) / 2) / max((tb.voices - 1) / 2, 1)
        cycles = _phase(f0, t, tb, tb.detune_cents * spread, offset=0.29 * v)
        if body is None:
            out += _read_table(bright, cycles)
        else:
            ring = _ring_time(tb, f0)
            out += _read_table(bright, cycles) * np.exp(-t / tb.bright_time).astype(np.float32)
            out += _read_table(body, cycles) * np.exp(-t / ring).astype(np.float32)
    return out


def _fm_voice(tb: Timbre, f0: float, t: np.ndarray, sr: int) -> np.ndarray:
    """Two-operator FM; the index shrinks for high notes so sidebands stay below Nyquist."""
    max_index = max(0.45 * sr / (f0 * tb.fm_ratio) - 2, 0.0)
    index = min(tb.fm_index, max_index) * np.exp(-t / tb.fm_index_time)
    modulator = np.sin(2 * np.pi * f0 * tb.fm_ratio * t)
    return (np.sin(2 * np.pi * f0 * t + index * modulator) * np.exp(-t / _ring_time(tb, f0))).astype(np.float32)


def synth_note(timbre: str, midi: int, gate_s: float, sr: int) -> np.ndarray:
    """Render one note (gate plus release tail) as float32 with peak `level`."""
    tb = TIMBRES[timbre]
    gate_n = max(1, int(round(gate_s * sr)))
    t = np.arange(gate_n + int(tb.release * sr)) / sr
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    raw = _fm_voice(tb, f0, t, sr) if tb.kind == "fm" else _harmonic_voices(tb, f0, t, sr)
    if tb.tremolo_depth:
        raw *= (1 - tb.tremolo_depth * (0.5 + 0.5 * np.sin(2 * np.pi * tb.tremolo_hz * t))).astype(np.float32)
    out = raw * _envelope(tb, t, gate_n).astype(np.float32)
    return out * np.float32(tb.level / max(float(np.abs(out).max()), 1e-9))


# ----------------------------------------------------------------------------------------------
# Drums: synthesised kit pieces, a few variants each so repeated hits are not identical
# ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _butter(sr: int, btype: str, freq: float | tuple[float, float]) -> np.ndarray:
    return signal.butter(2, freq, btype=btype, fs=sr, output="sos")


def _filtered(x: np.ndarray, sr: int, btype: str, freq: float | tuple[float, float]) -> np.ndarray:
    return signal.sosfilt(_butter(sr, btype, freq), x)


def _swept_sine(t: np.ndarray, sr: int, f_end: float, ratio: float, sweep_time: float) -> np.ndarray:
    """A sine gliding down from ratio*f_end: the pitch drop of a struck drum head."""
    freq = f_end * (1 + (ratio - 1) * np.exp(-t / sweep_time))
    return np.sin(2 * np.pi * np.cumsum(freq) / sr)


def _kick(sr: int, rng: np.random.Generator, electronic: bool) -> np.ndarray:
    t = np.arange(int((0.7 if electronic else 0.45) * sr)) / sr
    body = _swept_sine(t, sr, rng.uniform(42, 58), rng.uniform(2.5, 4.0), rng.uniform(0.025, 0.045))
    body *= np.exp(-t / (rng.uniform(0.25, 0.4) if electronic else rng.uniform(0.12, 0.2)))
    click = _filtered(rng.standard_normal(len(t)), sr, "highpass", 1500) * np.exp(-t / 0.004)
    return body + 0.3 * click


def _snare(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.35 * sr)) / sr
    f = rng.uniform(170, 220)
    tone = np.sin(2 * np.pi * f * t) * np.exp(-t / 0.05) + 0.4 * np.sin(2 * np.pi * 1.6 * f * t) * np.exp(-t / 0.03)
    noise = _filtered(rng.standard_normal(len(t)), sr, "bandpass", (1500, min(8000, 0.45 * sr)))
    return 0.6 * tone + 1.5 * noise * np.exp(-t / rng.uniform(0.08, 0.15))


def _clap(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.3 * sr)) / sr
    env = sum(np.where(t >= d, np.exp(-(t - d) / 0.006), 0.0) for d in (0.0, 0.011, 0.022))
    env = env + np.where(t >= 0.03, 0.6 * np.exp(-np.maximum(t - 0.03, 0) / 0.09), 0.0)
    return _filtered(rng.standard_normal(len(t)), sr, "bandpass", (900, 2800)) * env


def _metal(sr: int, rng: np.random.Generator, decay: float, cutoff: float, length: float) -> np.ndarray:
    """High-passed noise with a fast attack: hats, rides and crashes differ in decay and colour."""
    t = np.arange(int(length * sr)) / sr
    noise = _filtered(rng.standard_normal(len(t)), sr, "highpass", min(cutoff, 0.4 * sr))
    return noise * np.minimum(t / 0.001, 1.0) * np.exp(-t / decay)


def _tom(sr: int, rng: np.random.Generator, f: float) -> np.ndarray:
    t = np.arange(int(0.5 * sr)) / sr
    body = _swept_sine(t, sr, f * rng.uniform(0.95, 1.05), 1.5, 0.08) * np.exp(-t / 0.2)
    return body + 0.15 * _filtered(rng.standard_normal(len(t)), sr, "bandpass", (300, 3000)) * np.exp(-t / 0.03)


def _shaker(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.15 * sr)) / sr
    noise = _filtered(rng.standard_normal(len(t)), sr, "bandpass", (4000, min(9000, 0.45 * sr)))
    return noise * np.minimum(t / 0.012, 1.0) * np.exp(-t / 0.045)


_PIECE_LEVEL = {"kick": 1.0, "snare": 0.75, "clap": 0.7, "hat": 0.32, "open_hat": 0.28, "ride": 0.22,
                "crash": 0.35, "tom_hi": 0.7, "tom_mid": 0.7, "tom_lo": 0.75, "shaker": 0.3}  # fmt: skip


def make_kit(kit: str, sr: int, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """Synthesise every kit piece (3 variants of the noisy ones), scaled to its mix level."""
    electronic = kit == "electronic"
    makers = {
        "kick": lambda: _kick(sr, rng, electronic),
        "snare": lambda: _snare(sr, rng),
        "clap": lambda: _clap(sr, rng),
        "hat": lambda: _metal(sr, rng, 0.03 if electronic else 0.04, 7000, 0.25),
        "open_hat": lambda: _metal(sr, rng, 0.25, 6500, 0.8),
        "ride": lambda: _metal(sr, rng, 0.45, 5000, 1.2),
        "crash": lambda: _metal(sr, rng, 1.1, 3500, 2.5),
        "tom_hi": lambda: _tom(sr, rng, 200.0),
        "tom_mid": lambda: _tom(sr, rng, 150.0),
        "tom_lo": lambda: _tom(sr, rng, 110.0),
        "shaker": lambda: _shaker(sr, rng),
    }
    kit_sounds: dict[str, list[np.ndarray]] = {}
    for piece, make in makers.items():
        variants = []
        for _ in range(1 if piece == "kick" else 3):
            x = make()
            variants.append((x * (_PIECE_LEVEL[piece] / np.abs(x).max())).astype(np.float32))
        kit_sounds[piece] = variants
    return kit_sounds


# ----------------------------------------------------------------------------------------------
# Versions: plan, arrangement, event scheduling, mixing
# ----------------------------------------------------------------------------------------------

_BUSES = ("lead", "comp", "bass", "drums", "cymbals")
_REVERB_SEND = {"lead": 0.25, "comp": 0.35, "bass": 0.04, "drums": 0.12, "cymbals": 0.15}
_BASE_GAIN = {"lead": 0.5, "comp": 0.14, "bass": 0.32, "drums": 0.55, "cymbals": 1.3}
_ALL_LEADS = ("saw_lead", "square_lead", "flute", "organ", "accordion", "pluck", "fm_piano", "bell")
_ALL_COMPS = (("soft_pad", "sustain"), ("string_pad", "sustain"), ("organ", "pulse"), ("pluck", "strum"),
              ("pluck", "arp"), ("fm_piano", "arp"), ("saw_pad", "stabs"), ("accordion", "pulse"))  # fmt: skip
_ALL_BASSES = ("finger_bass", "synth_bass", "sub_bass")


@dataclass(frozen=True, eq=False)
class VersionPlan:
    """Everything a cover may change about a work: tempo, key, sound, mix, small arrangement bits."""

    version: int
    transpose: int
    tempo_factor: float
    tempo_bpm: float
    sample_rate: int
    channels: int
    duration_s: float
    fmt: str
    lead: str
    comp: str
    comp_pattern: str
    bass: str
    drum_mode: str  # "full" | "light" (kick and cymbals only) | "none"
    drums_in_intro: bool
    intro_hook: bool  # the lead plays the chorus hook over the intro
    double_last_chorus: bool
    gains: dict[str, float]
    pans: dict[str, float]
    reverb_send: float
    reverb_time: float
    jitter_s: float
    label: str


def track_layout(work_index: int, version_index: int) -> tuple[int, int]:
    """(sample rate, channels): alternates so half the tracks are 44.1 kHz stereo, half 22.05 kHz mono."""
    return (STEREO_RATE, 2) if (work_index + version_index) % 2 == 0 else (MONO_RATE, 1)


def track_format(work_index: int, version_index: int, cfg: SynthConfig) -> str:
    """Cycle through cfg.formats so every listed format (and rate/format pairing) appears."""
    return cfg.formats[(work_index + version_index) % len(cfg.formats)]


def _pick(palette: np.random.Generator, preferred: tuple, everything: tuple, version_index: int) -> Any:
    """Version v takes the v-th entry of a per-work shuffle: the style's choices first, then any."""
    ordered = [preferred[i] for i in palette.permutation(len(preferred))]
    rest = [x for x in everything if x not in preferred]
    ordered += [rest[i] for i in palette.permutation(len(rest))]
    return ordered[version_index % len(ordered)]


_LEAD_LABELS = {"organ": "organ version", "accordion": "accordion version", "bell": "music box version",
                "fm_piano": "piano version", "flute": "flute version"}  # fmt: skip
_FALLBACK_LABELS = ("live", "remix", "cover", "demo", "alternate take", "radio edit")


def _version_label(plan: VersionPlan, work: Work) -> str:
    """A human-readable tag for the title, derived from what actually changed in this version."""
    if plan.version == 0:
        return ""
    if plan.drum_mode == "none":
        return "acoustic version" if plan.comp_pattern in ("strum", "arp") else "unplugged"
    if plan.lead in _LEAD_LABELS:
        return _LEAD_LABELS[plan.lead]
    if plan.tempo_factor < 0.84:
        return "slow version"
    if plan.tempo_factor > 1.18:
        return "uptempo mix"
    if plan.comp == "string_pad":
        return "orchestral version"
    return _FALLBACK_LABELS[(work.index + plan.version) % len(_FALLBACK_LABELS)]


def plan_version(work: Work, version_index: int, cfg: SynthConfig, rng: np.random.Generator) -> VersionPlan:
    """Decide how version `version_index` re-interprets `work`; version 0 is the original."""
    sr, channels = track_layout(work.index, version_index)
    duration = float(rng.uniform(cfg.min_duration_s, cfg.max_duration_s))
    transpose = int(rng.choice([-5, -4, -3, -2, -1, 1, 2, 3, 4, 5]))
    factor = float(1 + rng.choice([-1, 1]) * rng.uniform(0.05, 0.25))
    if version_index == 0:
        transpose, factor = 0, 1.0
    tempo = float(np.clip(work.tempo_bpm * factor, 50, 180))
    style = _STYLES[work.style]
    palette = _stream(cfg.seed, _TAG_PALETTE, work.index)
    lead = _pick(palette, style.leads, _ALL_LEADS, version_index)
    comp, comp_pattern = _pick(palette, style.comps, _ALL_COMPS, version_index)
    bass = _pick(palette, style.basses, _ALL_BASSES, version_index)
    drum_mode = str(rng.choice(["full", "full", "full", "light", "none"])) if version_index else "full"
    pan_side = float(rng.choice([-1.0, 1.0]))
    plan = VersionPlan(
        version=version_index,
        transpose=transpose,
        tempo_factor=tempo / work.tempo_bpm,
        tempo_bpm=tempo,
        sample_rate=sr,
        channels=channels,
        duration_s=duration,
        fmt=track_format(work.index, version_index, cfg),
        lead=lead,
        comp=comp,
        comp_pattern=comp_pattern,
        bass=bass,
        drum_mode=drum_mode,
        drums_in_intro=bool(version_index == 0 or rng.random() < 0.5),
        intro_hook=bool(rng.random() < 0.5),
        double_last_chorus=bool(version_index > 0 and rng.random() < 0.3),
        gains={bus: _BASE_GAIN[bus] * 10 ** (rng.uniform(-3.0, 1.5) / 20) for bus in _BUSES},
        pans={"lead": rng.uniform(-0.15, 0.15), "comp": pan_side * rng.uniform(0.15, 0.45), "bass": 0.0,
              "drums": rng.uniform(-0.05, 0.05), "cymbals": -pan_side * rng.uniform(0.15, 0.35)},  # fmt: skip
        reverb_send=float(rng.uniform(0.1, 0.35)),
        reverb_time=float(rng.uniform(0.8, 2.2)),
        jitter_s=float(rng.uniform(0.002, 0.006)),
        label="",
    )
    return replace(plan, label=_version_label(plan, work))


def _schedule(work: Work, plan: VersionPlan) -> list[tuple[str, float]]:
    """(section, start beat) for this version: the form, looped before the outro until long enough."""
    body = list(work.structure)
    if plan.double_last_chorus and "chorus" in body:
        last = len(body) - 1 - body[::-1].index("chorus")
        body.insert(last, "chorus")
    loop = [s for s in work.structure if s not in ("intro", "outro")]
    seconds_per_beat = 60.0 / plan.tempo_bpm

    def beats(seq: list[str]) -> float:
        return sum(work.parts[s].bars for s in seq) * _BEATS_PER_BAR

    while beats(body) * seconds_per_beat < plan.duration_s:
        body = body[:-1] + loop + body[-1:]
    schedule, beat = [], 0.0
    for name in body:
        if beat * seconds_per_beat >= plan.duration_s:
            break
        schedule.append((name, beat))
        beat += work.parts[name].bars * _BEATS_PER_BAR
    return schedule


def _voicings(chords: tuple[Chord, ...], root_pc: int) -> list[list[int]]:
    """Close voicings around middle C, each inversion chosen to move the hands as little as possible."""
    out: list[list[int]] = []
    for chord in chords:
        tones = [root_pc + 48 + t for t in chord.tones]
        candidates = []
        for inv in range(len(tones)):
            notes = tones[inv:] + [t + 12 for t in tones[:inv]]
            lowest = _fit_register(notes[0], 52, 63)
            candidates.append([n + lowest - notes[0] for n in notes])
        if out:
            prev = out[-1]
            best = min(candidates, key=lambda c: sum(abs(a - b) for a, b in zip(sorted(c), sorted(prev))))
        else:
            best = min(candidates, key=lambda c: abs(c[0] - 55))
        out.append(sorted(best))
    return out


_COMP_RHYTHMS = {
    "pulse": tuple((i * 0.5, 0.4) for i in range(8)),
    "stabs": ((0.5, 0.3), (1.5, 0.3), (2.5, 0.3), (3.5, 0.3)),
    "strum": ((0.0, 1.0), (1.0, 0.5), (1.5, 1.0), (2.5, 0.5), (3.0, 0.5), (3.5, 0.5)),
    "arp": tuple((i * 0.5, 0.75) for i in range(8)),
    "arp16": tuple((i * 0.25, 0.35) for i in range(16)),
}
_ARP_ORDER = (0, 1, 2, 3, 2, 1, 2, 3)


def _comp_events(part: Part, pattern: str, root_pc: int, tempo: float) -> list[tuple[float, int, float, float]]:
    """Chords as the accompaniment plays them: held, pulsed, off-beat stabs, strummed or arpeggiated."""
    voicings = _voicings(part.chords, root_pc)
    events: list[tuple[float, int, float, float]] = []
    if pattern == "sustain":
        for chord, notes in zip(part.chords, voicings):
            events += [(chord.start, n, chord.dur, 0.7) for n in notes]
        return events
    strum_step = 0.012 * tempo / 60.0  # 12 ms between strings, in beats
    for bar in range(part.bars):
        for k, (onset, gate) in enumerate(_COMP_RHYTHMS[pattern]):
            beat = bar * _BEATS_PER_BAR + onset
            ci = _chord_at(part.chords, beat)
            notes, accent = voicings[ci], 1.0 if onset % 1 == 0 else 0.8
            if pattern.startswith("arp"):
                seq = notes + [notes[0] + 12]
                events.append((beat, seq[_ARP_ORDER[k % 8] % len(seq)], gate, 0.75 * accent))
            elif pattern == "strum":
                up = onset % 1 != 0
                for j, n in enumerate(notes[::-1] if up else notes):
                    events.append((beat + j * strum_step, n, gate, (0.6 if up else 0.8) * accent))
            else:
                events += [(beat, n, gate, 0.75 * accent) for n in notes]
    return events


def _events(work: Work, plan: VersionPlan, rng: np.random.Generator) -> dict[str, list[tuple[Any, ...]]]:
    """Turn the schedule into timed events per bus, with humanised timing and velocities."""
    spb = 60.0 / plan.tempo_bpm
    lead_ref = _fit_register(work.melody_ref + plan.transpose, 55, 67)
    bass_ref = _fit_register(work.bass_ref + plan.transpose, 34, 46)
    root_pc = (work.tonic + plan.transpose) % 12
    comp = {name: _comp_events(p, plan.comp_pattern, root_pc, plan.tempo_bpm) for name, p in work.parts.items()}
    out: dict[str, list[tuple[Any, ...]]] = {bus: [] for bus in _BUSES}

    def add(bus: str, beat: float, what: Any, gate_beats: float, vel: float, jitter: float) -> None:
        t = beat * spb + min(max(float(rng.normal(0.0, jitter)), -3 * jitter), 3 * jitter)
        if t < plan.duration_s:
            vel = min(max(vel * (1 + float(rng.normal(0.0, 0.06))), 0.05), 1.2)
            out[bus].append((max(t, 0.0), what, gate_beats * spb, vel))

    for name, start in _schedule(work, plan):
        part = work.parts[name]
        if name != "intro" or plan.intro_hook:
            for n in part.melody:
                add("lead", start + n.start, lead_ref + n.pitch, n.dur, n.vel, plan.jitter_s)
        for beat, midi, gate, vel in comp[name]:
            add("comp", start + beat, midi, gate, vel, plan.jitter_s)
        for n in part.bass:
            add("bass", start + n.start, bass_ref + n.pitch, n.dur, n.vel, plan.jitter_s)
        if plan.drum_mode == "none" or (name == "intro" and not plan.drums_in_intro):
            continue
        for hit in part.drums:
            if plan.drum_mode == "light" and hit.piece not in ("kick", "hat", "shaker", "ride"):
                continue
            vel = hit.vel * (0.7 if plan.drum_mode == "light" else 1.0)
            add("cymbals" if hit.piece in _CYMBALS else "drums", start + hit.start, hit.piece, 0.0, vel,
                plan.jitter_s / 2)
    return out


def _place(bus: np.ndarray, start_s: float, sound: np.ndarray, vel: float, sr: int) -> None:
    start = int(round(start_s * sr))
    end = min(len(bus), start + len(sound))
    if end > start:
        bus[start:end] += np.float32(vel) * sound[: end - start]


def _render_pitched(events: list[tuple[Any, ...]], timbre: str, n: int, sr: int) -> np.ndarray:
    """Sum notes into a bus; identical (pitch, length) notes are synthesised once and reused."""
    bus = np.zeros(n, dtype=np.float32)
    cache: dict[tuple[int, int], np.ndarray] = {}
    for start_s, midi, gate_s, vel in events:
        key = (int(midi), max(1, int(round(gate_s * sr))))
        if key not in cache:
            cache[key] = synth_note(timbre, key[0], key[1] / sr, sr)
        _place(bus, start_s, cache[key], vel, sr)
    return bus


def _render_drums(events: list[tuple[Any, ...]], kit: dict[str, list[np.ndarray]], n: int, sr: int) -> np.ndarray:
    bus = np.zeros(n, dtype=np.float32)
    counters: dict[str, int] = {}
    for start_s, piece, _, vel in events:
        k = counters.get(piece, 0)
        counters[piece] = k + 1
        _place(bus, start_s, kit[piece][k % len(kit[piece])], vel, sr)
    return bus


_REVERB_RATE = 11025


def _reverb_ir(sr: int, rt60: float, channels: int, rng: np.random.Generator) -> np.ndarray:
    """Exponentially decaying, darkened noise after a short pre-delay: a plausible small hall."""
    n = int(rt60 * sr)
    t = np.arange(n) / sr
    noise = rng.standard_normal((n, channels)) * np.exp(-6.9 * t / rt60)[:, None]
    noise = signal.sosfilt(signal.butter(1, 0.4 * sr, fs=sr, output="sos"), noise, axis=0)
    ir = np.concatenate([np.zeros((int(0.02 * sr), channels)), noise])
    return (ir / np.sqrt((ir**2).sum(axis=0, keepdims=True))).astype(np.float32)


def _upsample_linear(x: np.ndarray, factor: int, n: int) -> np.ndarray:
    """Linear interpolation by an integer factor (cheaper than np.interp on millions of points)."""
    if factor == 1:
        return x[:n]
    nxt = np.append(x[1:], x[-1])
    ramp = (np.arange(factor, dtype=np.float32) / factor)[None, :]
    return (x[:, None] + (nxt - x)[:, None] * ramp).reshape(-1)[:n]


def _reverb(send: np.ndarray, sr: int, rt60: float, channels: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Convolution reverb run at ~11 kHz and interpolated back up, one array per output channel.

    A reverb tail is dark anyway, and at a quarter of the rate the FFTs (the most expensive step
    of rendering a 44.1 kHz track) cost about a quarter as much.
    """
    factor = max(1, sr // _REVERB_RATE)
    n, m = len(send), -(-len(send) // factor)
    padded = np.zeros(m * factor, dtype=np.float32)
    padded[:n] = send
    low = padded.reshape(m, factor).mean(axis=1)
    ir = _reverb_ir(sr // factor, rt60, channels, rng)
    wet = signal.fftconvolve(low[:, None], ir, axes=0)[:m].astype(np.float32)
    return [_upsample_linear(wet[:, c], factor, n) for c in range(channels)]


def _pan_gains(pan: float) -> tuple[float, float]:
    angle = (pan + 1) * np.pi / 4  # constant power
    return float(np.cos(angle)), float(np.sin(angle))


def _mix(buses: dict[str, np.ndarray], plan: VersionPlan, rng: np.random.Generator) -> np.ndarray:
    """Pan and balance the buses, add a reverb send, return (frames, channels)."""
    n, ch, sr = len(buses["lead"]), plan.channels, plan.sample_rate
    outs = [np.zeros(n, dtype=np.float32) for _ in range(ch)]
    send = np.zeros(n, dtype=np.float32)
    for name, bus in buses.items():
        gain = plan.gains[name]
        pans = (1.0,) if ch == 1 else _pan_gains(plan.pans[name])
        for out, pan in zip(outs, pans):
            out += np.float32(gain * pan) * bus
        send += np.float32(gain * _REVERB_SEND[name]) * bus
    for out, wet in zip(outs, _reverb(send, sr, plan.reverb_time, ch, rng)):
        out += np.float32(plan.reverb_send) * wet
    return np.stack(outs, axis=1)


def _master(audio: np.ndarray, sr: int) -> np.ndarray:
    """Peak to -1 dBFS, a few ms fade-in, and a radio-style fade-out where the track is cut."""
    audio = audio * np.float32(10 ** (PEAK_DBFS / 20) / max(float(np.abs(audio).max()), 1e-9))
    n = len(audio)
    fade_in = min(int(0.005 * sr), n)
    audio[:fade_in] *= np.linspace(0.0, 1.0, fade_in, dtype=np.float32)[:, None]
    fade_out = min(int(min(3.0, 0.12 * n / sr) * sr), n)
    curve = 0.5 * (1 + np.cos(np.linspace(0.0, np.pi, fade_out)))
    audio[n - fade_out :] *= curve.astype(np.float32)[:, None]
    return audio


def render_version(
    work: Work, version_index: int, cfg: SynthConfig, rng: np.random.Generator
) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Render one version of a work: (float32 audio of shape (frames, channels), sample rate, metadata)."""
    plan = plan_version(work, version_index, cfg, rng)
    sr, n = plan.sample_rate, int(round(plan.duration_s * plan.sample_rate))
    events = _events(work, plan, rng)
    kit = make_kit(_STYLES[work.style].kit, sr, rng)
    buses = {
        "lead": _render_pitched(events["lead"], plan.lead, n, sr),
        "comp": _render_pitched(events["comp"], plan.comp, n, sr),
        "bass": _render_pitched(events["bass"], plan.bass, n, sr),
        "drums": _render_drums(events["drums"], kit, n, sr),
        "cymbals": _render_drums(events["cymbals"], kit, n, sr),
    }
    audio = _master(_mix(buses, plan, rng), sr)
    spb = 60.0 / plan.tempo_bpm
    key = f"{NOTE_NAMES[(work.tonic + plan.transpose) % 12]} {work.mode}"
    meta: dict[str, Any] = {
        "track_id": f"{work.work_id}_v{version_index}",
        "work_id": work.work_id,
        "version": version_index,
        "title": f"{work.title} ({plan.label})" if plan.label else work.title,
        "duration": round(n / sr, 3),
        "style": work.style,
        "sample_rate": sr,
        "channels": plan.channels,
        "format": plan.fmt,
        "tempo_bpm": round(plan.tempo_bpm, 2),
        "key": key,
        "transpose": plan.transpose,
        "tempo_factor": round(plan.tempo_factor, 4),
        "instruments": {"lead": plan.lead, "comp": plan.comp, "comp_pattern": plan.comp_pattern,
                        "bass": plan.bass, "drums": plan.drum_mode},  # fmt: skip
        "sections": [{"name": name, "start_s": round(beat * spb, 3)} for name, beat in _schedule(work, plan)],
    }
    return audio.astype(np.float32, copy=False), sr, meta


def render_track(work_index: int, version_index: int, cfg: SynthConfig) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Compose and render one (work, version) exactly as the archive would contain it."""
    work = compose_work(work_index, work_rng(cfg.seed, work_index))
    return render_version(work, version_index, cfg, version_rng(cfg.seed, work_index, version_index))


def render_track_preview(
    work_index: int, version_index: int, cfg: SynthConfig | None = None
) -> tuple[np.ndarray, int]:
    """Convenience for people and tests: (audio, sample rate) of one track, no archive needed."""
    audio, sr, _ = render_track(work_index, version_index, cfg or SynthConfig())
    return audio, sr


# ----------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------

_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _ogg_crc(page: bytes) -> int:
    """Ogg's CRC-32 (poly 0x04C11DB7, MSB-first, init 0) via zlib on bit-reversed bytes (C speed)."""
    reflected = zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def _fix_ogg_serial(data: bytes, serial: int) -> bytes:
    """Replace the random stream serial libsndfile puts in every Ogg page, then re-checksum pages.

    The Vorbis payload itself is deterministic; only the serial (and so each page CRC) changes run
    to run, which would make identical audio produce different archive bytes.
    """
    out, pos = bytearray(data), 0
    while pos < len(out):
        if out[pos : pos + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {pos}")
        n_segments = out[pos + 26]
        length = 27 + n_segments + sum(out[pos + 27 : pos + 27 + n_segments])
        out[pos + 14 : pos + 18] = serial.to_bytes(4, "little")
        out[pos + 22 : pos + 26] = b"\0\0\0\0"
        out[pos + 22 : pos + 26] = _ogg_crc(bytes(out[pos : pos + length])).to_bytes(4, "little")
        pos += length
    return bytes(out)


def encode_audio(audio: np.ndarray, sr: int, fmt: str, serial: int = 0x6D757369) -> bytes:
    """Encode to FLAC/WAV (PCM_16) or Ogg Vorbis in memory, byte-reproducibly."""
    container, subtype = _SOUNDFILE_FORMATS[fmt]
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", sr, audio.shape[1], subtype=subtype, format=container) as handle:
        for start in range(0, len(audio), _ENCODE_BLOCK):
            handle.write(audio[start : start + _ENCODE_BLOCK])
    data = buffer.getvalue()
    return _fix_ogg_serial(data, serial) if fmt == "ogg" else data


# ----------------------------------------------------------------------------------------------
# Archive
# ----------------------------------------------------------------------------------------------


def _track_job(job: tuple[SynthConfig, int, int]) -> tuple[dict[str, Any], bytes]:
    """Worker: render and encode one track (module-level so process pools can pickle it)."""
    cfg, work_index, version_index = job
    audio, sr, meta = render_track(work_index, version_index, cfg)
    serial = zlib.crc32(meta["track_id"].encode())
    return meta, encode_audio(audio, sr, meta["format"], serial=serial)


def _member_plan(cfg: SynthConfig) -> list[tuple[str, int, int]]:
    """(archive path, work, version) for every track, sorted by path so archives are reproducible."""
    members = []
    for w in range(cfg.n_works):
        style = compose_work(w, work_rng(cfg.seed, w)).style
        for v in range(cfg.versions_per_work):
            members.append((f"audio/{style}/w{w:04d}_v{v}.{track_format(w, v, cfg)}", w, v))
    return sorted(members)


def _run_jobs(
    jobs: list[tuple[SynthConfig, int, int]], workers: int
) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Results in job order; with workers > 1, processes render up to 8 tracks per worker ahead.

    The window keeps workers busy while the head job is a long track, yet bounds the encoded
    tracks held in memory (about 16 MB each at most).
    """
    if workers <= 1:
        yield from map(_track_job, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending: deque[Future[tuple[dict[str, Any], bytes]]] = deque()
        queue = iter(jobs)
        for job in queue:
            pending.append(pool.submit(_track_job, job))
            if len(pending) >= 8 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# Level 1: FLAC/Vorbis do not deflate further and WAV gains <0.5 % from higher levels.
_GZIP_LEVEL = 1


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _metadata_csv(rows: list[dict[str, Any]]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METADATA_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


_PARALLEL_MIN_AUDIO_S = 300.0


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def build_archive(
    cfg: SynthConfig, out_path: Path, progress: bool = True, workers: int | None = None
) -> list[dict[str, Any]]:
    """Render every (work, version) and write a reproducible tar.gz with audio and metadata.csv.

    Members: ``audio/<style>/<track_id>.<ext>`` sorted by path, then ``metadata.csv``; fixed
    mtime/owner and a gzip header without time or name make same config => same bytes.
    `workers` processes render in parallel (default: one per available CPU, or none for small
    archives); the result does not depend on it. Returns the metadata rows as written to the CSV.
    """
    members = _member_plan(cfg)
    n_workers = min(workers or _default_workers(), len(members))
    audio_s = len(members) * (cfg.min_duration_s + cfg.max_duration_s) / 2
    if workers is None and audio_s < _PARALLEL_MIN_AUDIO_S:
        n_workers = 1  # starting processes would cost more than it saves
    jobs = [(cfg, w, v) for _, w, v in members]
    rows: list[dict[str, Any]] = []
    with atomic_file(out_path) as tmp, tmp.open("wb") as raw:
        # filename="" and mtime=0: the gzip header carries neither the temp file's name nor a time.
        gz = gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=_GZIP_LEVEL, mtime=0)
        with (
            gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar,  # type: ignore[call-overload]
            tqdm(total=len(jobs), desc="synth", unit="track", disable=not progress) as bar,
        ):
            for (member, _, _), (meta, data) in zip(members, _run_jobs(jobs, n_workers)):
                _tar_add(tar, member, data)
                rows.append({"file": member, **{col: meta[col] for col in METADATA_COLUMNS[1:]}})
                bar.update()
            _tar_add(tar, "metadata.csv", _metadata_csv(rows))
    return rows
