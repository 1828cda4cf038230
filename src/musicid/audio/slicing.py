"""Slice strategies: where in a track training windows and evaluation queries start.

Every strategy answers the same question — `count` start times for windows of `length_s` in one
signal — so training (`shards.strategy`) and evaluation (`prepare.query_strategy`) choose theirs
independently:

- `random`: uniform over the track.
- `silence_aware`: uniform over windows that do not start in silence and are at most
  `MAX_SILENT_SHARE` silent (RMS frames below the silence threshold).
- `high_energy`: the loudest windows (mean RMS power), spread at least half a window apart.
- `beat_aware`: start on beats (librosa beat tracking), skipping beats in silence.
- `repeated_section_aware`: windows in the most repeated material (chroma recurrence, librosa),
  e.g. choruses: the hardest case for offset-consistent matching.
- `hybrid`: half `silence_aware`, a quarter `high_energy`, a quarter `beat_aware` (rounded so
  silence-aware windows get the remainder).

Strategies that find no valid window (a track of silence, no beats) fall back to `silence_aware`
and then `random`, so a requested count is always met.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import get_args

import numpy as np

from musicid.config import SliceStrategy

STRATEGIES: tuple[str, ...] = get_args(SliceStrategy)
FRAME = 2048
HOP = 512
BEAT_HOP = 128
MAX_SILENT_SHARE = 0.2


@dataclass
class TrackAnalysis:
    """Lazily computed frame features of one mono signal (each strategy pays only for what it uses)."""

    signal: np.ndarray
    sample_rate: int
    silence_db: float = -50.0
    _rms_db: np.ndarray | None = field(default=None, repr=False)
    _beats: np.ndarray | None = field(default=None, repr=False)
    _repetition: np.ndarray | None = field(default=None, repr=False)

    @property
    def duration_s(self) -> float:
        return len(self.signal) / self.sample_rate

    @property
    def frame_s(self) -> float:
        return HOP / self.sample_rate

    @property
    def rms_db(self) -> np.ndarray:
        if self._rms_db is None:
            import librosa

            rms = librosa.feature.rms(y=self.signal, frame_length=FRAME, hop_length=HOP, center=True)[0]
            self._rms_db = 20 * np.log10(np.maximum(rms, 1e-10))
        return self._rms_db

    @property
    def silent(self) -> np.ndarray:
        return self.rms_db < self.silence_db

    @property
    def beats_s(self) -> np.ndarray:
        if self._beats is None:
            import librosa

            # short FFT + fine hop: the onset envelope (and so the beats) sit on the attacks, not ~60 ms after
            envelope = librosa.onset.onset_strength(y=self.signal, sr=self.sample_rate, n_fft=512, hop_length=BEAT_HOP)
            _, times = librosa.beat.beat_track(onset_envelope=envelope, sr=self.sample_rate, hop_length=BEAT_HOP, units="time")
            self._beats = np.asarray(times, dtype=np.float64)
        return self._beats

    @property
    def repetition(self) -> np.ndarray:
        """Per frame: how strongly this moment recurs elsewhere in the track (0 = unique)."""
        if self._repetition is None:
            import librosa

            coarse = 4  # chroma every 4 analysis frames keeps the recurrence matrix small
            chroma = librosa.feature.chroma_stft(y=self.signal, sr=self.sample_rate, n_fft=FRAME, hop_length=HOP * coarse)
            if chroma.shape[1] < 8:
                self._repetition = np.zeros(len(self.rms_db))
            else:
                stacked = librosa.feature.stack_memory(chroma, n_steps=4, delay=1)
                width = max(2, int(round(2.0 / (self.frame_s * coarse))))  # ignore self-similarity within ±2 s
                recurrence = librosa.segment.recurrence_matrix(stacked, mode="affinity", sym=True, width=width)
                score = np.asarray(recurrence.sum(axis=1)).ravel()
                self._repetition = np.repeat(score, coarse)[: len(self.rms_db)]
                if len(self._repetition) < len(self.rms_db):
                    self._repetition = np.pad(self._repetition, (0, len(self.rms_db) - len(self._repetition)), mode="edge")
        return self._repetition


def _window_frames(analysis: TrackAnalysis, length_s: float) -> tuple[int, int]:
    """(frames per window, number of candidate start frames)."""
    width = max(1, int(round(length_s / analysis.frame_s)))
    last_start = analysis.duration_s - length_s
    candidates = int(np.floor(last_start / analysis.frame_s)) + 1 if last_start >= 0 else 0
    return width, min(candidates, len(analysis.rms_db))


def _window_means(values: np.ndarray, width: int, candidates: int) -> np.ndarray:
    padded = np.concatenate([values, np.full(width, values[-1] if len(values) else 0.0)])
    sums = np.concatenate([[0.0], np.cumsum(padded, dtype=np.float64)])
    return (sums[width : width + candidates] - sums[:candidates]) / width


def valid_starts(analysis: TrackAnalysis, length_s: float) -> np.ndarray:
    """Start frames whose first frame is not silent and whose window is mostly sound."""
    width, candidates = _window_frames(analysis, length_s)
    if candidates == 0:
        return np.zeros(0, dtype=np.int64)
    silent = analysis.silent.astype(np.float64)
    share = _window_means(silent, width, candidates)
    ok = (~analysis.silent[:candidates]) & (share <= MAX_SILENT_SHARE)
    return np.flatnonzero(ok)


def _spread_best(scores: np.ndarray, allowed: np.ndarray, count: int, min_gap: int) -> list[int]:
    """Greedy: the highest-scoring allowed frames, at least `min_gap` frames apart."""
    chosen: list[int] = []
    for frame in allowed[np.argsort(-scores[allowed], kind="stable")]:
        if all(abs(int(frame) - other) >= min_gap for other in chosen):
            chosen.append(int(frame))
            if len(chosen) == count:
                break
    return chosen


def _pick(rng: np.random.Generator, pool: np.ndarray, count: int) -> np.ndarray:
    return rng.choice(pool, size=count, replace=len(pool) < count)


def choose_starts(
    analysis: TrackAnalysis, length_s: float, count: int, strategy: str, rng: np.random.Generator
) -> np.ndarray:
    """`count` window start times (seconds, sorted) for windows of `length_s` (empty if the track is shorter)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown slice strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    room = analysis.duration_s - length_s
    if count <= 0 or room < 0:
        return np.zeros(0)
    if strategy == "random":  # needs no analysis
        return np.sort(rng.uniform(0.0, room, size=count))
    frame_s = analysis.frame_s
    width, candidates = _window_frames(analysis, length_s)

    def seconds(frames: np.ndarray | list[int]) -> np.ndarray:
        return np.minimum(np.asarray(frames, dtype=np.float64) * frame_s, room)

    if strategy == "hybrid":
        energetic, beats = count // 4, count // 4
        parts = [
            choose_starts(analysis, length_s, count - energetic - beats, "silence_aware", rng),
            choose_starts(analysis, length_s, energetic, "high_energy", rng),
            choose_starts(analysis, length_s, beats, "beat_aware", rng),
        ]
        return np.sort(np.concatenate(parts))
    allowed = valid_starts(analysis, length_s)
    if strategy == "silence_aware":
        if len(allowed) == 0:
            return choose_starts(analysis, length_s, count, "random", rng)
        return np.sort(seconds(_pick(rng, allowed, count)))
    if strategy == "beat_aware":
        beats = analysis.beats_s
        frames = np.round(beats / frame_s).astype(np.int64)
        on_beat = beats[(beats <= room) & np.isin(frames, allowed)]
        if len(on_beat) == 0:
            return choose_starts(analysis, length_s, count, "silence_aware", rng)
        return np.sort(_pick(rng, on_beat, count))
    # high_energy and repeated_section_aware: best-scoring windows, spread out
    if len(allowed) == 0:
        return choose_starts(analysis, length_s, count, "random", rng)
    values = 10 ** (analysis.rms_db / 10) if strategy == "high_energy" else analysis.repetition
    scores = _window_means(values.astype(np.float64), width, candidates)
    chosen = _spread_best(scores, allowed, count, min_gap=max(1, width // 2))
    if len(chosen) < count:  # a short track holds fewer spread-out windows than asked: repeat the best
        chosen += list(_pick(rng, np.asarray(chosen), count - len(chosen)))
    return np.sort(seconds(chosen))


ANALYSIS_RATE = 8000  # strategies look at mono audio at this rate (the fingerprinter's rate)


def analyze(samples: np.ndarray, sample_rate: int, silence_db: float = -50.0) -> TrackAnalysis:
    """A TrackAnalysis of decoded audio (any rate, mono or channels-last), at ANALYSIS_RATE mono."""
    from musicid.audio.resample import to_model_rate

    return TrackAnalysis(to_model_rate(samples, sample_rate, ANALYSIS_RATE), ANALYSIS_RATE, silence_db)
