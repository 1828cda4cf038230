"""Composition: random streams, music theory, melody, bass, drums, song form → a `Work` of notes.

No audio here: a work is pure note/chord/drum events, so the same notes can label the pitch family's
targets or be rendered as audio by `musicid.data.synth.render`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
