"""Fixed windows of synthetic notes with their targets, computed when the window is made.

A window is `window_samples` long. Each note has a timbre (harmonic amplitude profile + ADSR), a
velocity, a start phase and a drawn onset in [−(W−1), W−1] samples relative to the window's first
sample; the note list records the onset clamped at 0 (what the window shows), while the envelope
and phase run from the drawn onset, so a note that began before the window is caught mid-note.
The offset lies in [clamped onset, 2W]. Four classes by overlap with the window:

    1 ends inside   onset ≤ 0, offset < W      confidence min(visible · 0.5, 0.3)
    2 starts inside onset > 0, offset ≥ W      confidence 1.0
    3 short         onset > 0, offset < W      confidence min(visible · 0.5, 0.3)
    4 sustained     onset ≤ 0, offset ≥ W      confidence 1.0

(`visible` is the share of the window the note sounds in.) The **energy** target is computed in
the frequency domain, without rendering: Σ_k A_k² / 2 of the harmonics under Nyquist × velocity² ×
the mean squared envelope over the visible span, × visible · 0.5 for classes 1 and 3; shares are
normalised over the window's notes and spread as a Gaussian (σ = `energy_sigma_bins`) centred on
the fundamental's fractional bin. `time_domain_energy` renders each note alone instead (the test
and the benchmark compare the two).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musicid.families.pitch.bins import BinScale

NOTE_FIELDS = ("bin", "frequency", "velocity", "timbre", "onset", "offset", "class")
ENDS_INSIDE, STARTS_INSIDE, SHORT, SUSTAINED = 1, 2, 3, 4
PARTIAL_CLASSES = (ENDS_INSIDE, SHORT)


@dataclass(frozen=True)
class Timbres:
    """`amplitudes` (n, K): harmonic k+1's amplitude; ADSR times in seconds, sustain level in (0, 1]."""

    amplitudes: np.ndarray
    attack_s: np.ndarray
    decay_s: np.ndarray
    sustain: np.ndarray
    release_s: np.ndarray

    def __len__(self) -> int:
        return len(self.amplitudes)


def make_timbres(n: int, max_harmonics: int, seed: int) -> Timbres:
    """`n` deterministic timbres: power-law spectra (one in six steep enough to be nearly a pure tone),
    some odd-harmonic (reed-like), a formant, jitter."""
    rng = np.random.default_rng([seed, 0x71AB])
    k = np.arange(1, max_harmonics + 1, dtype=np.float64)
    slope = np.where(rng.random(n) < 1 / 6, rng.uniform(3.0, 6.0, n), rng.uniform(0.6, 2.4, n))[:, None]
    amps = k[None] ** -slope
    odd = rng.random(n) < 0.3
    amps[odd, 1::2] *= 0.08
    centre = rng.uniform(1.0, np.log(max_harmonics), n)[:, None]
    amps *= 1.0 + rng.uniform(0.0, 3.0, n)[:, None] * np.exp(-((np.log(k)[None] - centre) ** 2) / 0.3)
    amps *= rng.uniform(0.7, 1.3, amps.shape)
    amps /= amps.max(axis=1, keepdims=True)
    return Timbres(
        amplitudes=amps.astype(np.float64),
        attack_s=rng.uniform(0.001, 0.05, n),
        decay_s=rng.uniform(0.01, 0.3, n),
        sustain=rng.uniform(0.2, 1.0, n),
        release_s=rng.uniform(0.01, 0.2, n),
    )


@dataclass
class Notes:
    """One window's notes (parallel arrays): frequency Hz, velocity, timbre, drawn onset, offset, phase."""

    frequency: np.ndarray
    velocity: np.ndarray
    timbre: np.ndarray
    onset_drawn: np.ndarray
    offset: np.ndarray
    phase: np.ndarray

    def __len__(self) -> int:
        return len(self.frequency)

    @property
    def onset(self) -> np.ndarray:
        return np.maximum(self.onset_drawn, 0)


def note_classes(onset: np.ndarray, offset: np.ndarray, window: int) -> np.ndarray:
    starts_inside, ends_inside = onset > 0, offset < window
    return np.select(
        [~starts_inside & ends_inside, starts_inside & ~ends_inside, starts_inside & ends_inside],
        [ENDS_INSIDE, STARTS_INSIDE, SHORT], SUSTAINED,
    ).astype(np.int8)


def visible_samples(notes: Notes, window: int) -> np.ndarray:
    return np.clip(np.minimum(notes.offset, window) - notes.onset, 0, window)


def envelope(t: np.ndarray, duration: float, timbres: Timbres, timbre: int, sample_rate: int) -> np.ndarray:
    """ADSR at sample times `t` since the drawn onset of a note lasting `duration` samples.

    Attack, decay and release shrink together when they do not fit the note; it ends at 0.
    """
    times, levels = _adsr_breakpoints(duration, timbres, timbre, sample_rate)
    return np.interp(np.asarray(t, dtype=np.float64), times, levels, left=0.0, right=0.0)


def _adsr_breakpoints(duration: float, timbres: Timbres, timbre: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    times, levels = _adsr_table(np.array([duration], dtype=np.float64), np.array([timbre]), timbres, sample_rate)
    return times[0], levels[0]


def _mean_square(lo: np.ndarray, hi: np.ndarray, times: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Mean of env² over [lo, hi) per row, integrated exactly on each linear segment of the envelope."""
    lo, hi = lo[:, None], hi[:, None]
    t0, t1, e0, e1 = times[:, :-1], times[:, 1:], levels[:, :-1], levels[:, 1:]
    a, b = np.maximum(lo, t0), np.minimum(hi, t1)
    slope = (e1 - e0) / np.maximum(t1 - t0, 1e-12)
    ea, eb = e0 + slope * (a - t0), e0 + slope * (b - t0)
    integral = np.sum(np.clip(b - a, 0.0, None) * (ea * ea + ea * eb + eb * eb) / 3.0, axis=1)
    span = (hi - lo)[:, 0]
    return np.where(span > 0, integral / np.maximum(span, 1e-12), 0.0)


def mean_square_envelope(lo: float, hi: float, duration: float, timbres: Timbres, timbre: int,
                         sample_rate: int) -> float:
    """Mean of env² over note time [lo, hi), exactly, from the piecewise-linear ADSR (no sampling)."""
    times, levels = _adsr_breakpoints(duration, timbres, timbre, sample_rate)
    return float(_mean_square(np.array([float(lo)]), np.array([float(hi)]), times[None], levels[None])[0])


def _harmonics(freq: float, timbres: Timbres, timbre: int, sample_rate: int) -> np.ndarray:
    """The timbre's amplitudes of the harmonics below Nyquist."""
    amps = timbres.amplitudes[timbre]
    count = int(min(len(amps), np.ceil(0.5 * sample_rate / freq) - 1))
    return amps[: max(count, 1)] if freq < 0.5 * sample_rate else amps[:0]


def _visible_env(notes: Notes, i: int, timbres: Timbres, window: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = int(notes.onset[i]), int(min(notes.offset[i], window))
    n = np.arange(lo, max(lo, hi))
    env = envelope(n - notes.onset_drawn[i], float(notes.offset[i] - notes.onset_drawn[i]), timbres,
                   int(notes.timbre[i]), sample_rate)
    return n, env


def render_note(notes: Notes, i: int, timbres: Timbres, window: int, sample_rate: int) -> np.ndarray:
    """Note i alone over the window: v · env(t) · Σ_k A_k sin(k(ωt + φ)), t from its drawn onset."""
    out = np.zeros(window)
    n, env = _visible_env(notes, i, timbres, window, sample_rate)
    amps = _harmonics(float(notes.frequency[i]), timbres, int(notes.timbre[i]), sample_rate)
    if not len(n) or not len(amps):
        return out
    theta = 2 * np.pi * notes.frequency[i] * (n - notes.onset_drawn[i]) / sample_rate + notes.phase[i]
    z = np.exp(1j * theta)
    acc = np.zeros(len(n), dtype=np.complex128)
    for amp in amps[::-1]:  # Horner: Σ_k A_k z^k with one complex multiply per harmonic
        acc = (acc + amp) * z
    out[n] = notes.velocity[i] * env * acc.imag
    return out


def render_window(notes: Notes, timbres: Timbres, window: int, sample_rate: int) -> np.ndarray:
    """The mixed window, scaled down only if it would clip (energy shares are unaffected)."""
    mix = np.zeros(window)
    for i in range(len(notes)):
        mix += render_note(notes, i, timbres, window, sample_rate)
    peak = float(np.abs(mix).max(initial=0.0))
    return (mix / peak * 0.99 if peak > 0.99 else mix).astype(np.float32)


def _class_weight(notes: Notes, window: int) -> np.ndarray:
    visible = visible_samples(notes, window) / window
    classes = note_classes(notes.onset, notes.offset, window)
    return np.where(np.isin(classes, PARTIAL_CLASSES), visible * 0.5, 1.0)


def _shares(raw: np.ndarray) -> np.ndarray:
    total = raw.sum()
    return raw / total if total > 0 else np.zeros_like(raw)


def _adsr_table(duration: np.ndarray, timbre: np.ndarray, timbres: Timbres, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoint times (n, 5) and levels (n, 5) of each note's envelope in note time.

    Attack, decay and release shrink together when they do not fit the note; it ends at 0.
    """
    t = np.asarray(timbre, dtype=np.int64)
    a, d, r = (x[t] * sample_rate for x in (timbres.attack_s, timbres.decay_s, timbres.release_s))
    fit = np.minimum(1.0, duration / np.maximum(a + d + r, 1e-9))
    a, d, r = a * fit, d * fit, r * fit
    times = np.stack([np.zeros_like(duration), a, a + d, duration - r, duration], axis=1)
    s = timbres.sustain[t]
    levels = np.stack([np.zeros_like(s), np.ones_like(s), s, s, np.zeros_like(s)], axis=1)
    return times, levels


def harmonic_power(notes: Notes, timbres: Timbres, sample_rate: int) -> np.ndarray:
    """Σ_k A_k² / 2 over each note's harmonics below Nyquist (all notes at once)."""
    cumulative = np.concatenate([np.zeros((len(timbres), 1)), np.cumsum(timbres.amplitudes**2, axis=1)], axis=1)
    count = np.clip(np.ceil(0.5 * sample_rate / notes.frequency) - 1, 0, timbres.amplitudes.shape[1]).astype(np.int64)
    count = np.where(notes.frequency < 0.5 * sample_rate, np.maximum(count, 1), 0)
    return 0.5 * cumulative[np.asarray(notes.timbre, dtype=np.int64), count]


def frequency_domain_energy(notes: Notes, timbres: Timbres, window: int, sample_rate: int,
                            normalise: bool = True) -> np.ndarray:
    """Per-note energy (shares unless `normalise` is False) from the spectrum and envelope alone (no rendering).

    Vectorised over notes: the mean squared envelope is integrated exactly on each linear ADSR
    segment clipped to the visible span, Σ A_k² comes from per-timbre cumulative sums.
    """
    if not len(notes):
        return np.zeros(0)
    lo = (notes.onset - notes.onset_drawn).astype(np.float64)  # visible span in note time
    hi = (np.minimum(notes.offset, window) - notes.onset_drawn).astype(np.float64)
    times, levels = _adsr_table((notes.offset - notes.onset_drawn).astype(np.float64), notes.timbre, timbres, sample_rate)
    mean_env2 = _mean_square(lo, hi, times, levels)
    raw = harmonic_power(notes, timbres, sample_rate) * notes.velocity**2 * mean_env2 * _class_weight(notes, window)
    return _shares(raw) if normalise else raw


def time_domain_energy(notes: Notes, timbres: Timbres, window: int, sample_rate: int,
                       normalise: bool = True) -> np.ndarray:
    """The same, measured on each note rendered alone: mean square over its visible span."""
    raw = np.zeros(len(notes))
    visible = visible_samples(notes, window)
    for i in range(len(notes)):
        if visible[i]:
            x = render_note(notes, i, timbres, window, sample_rate)
            raw[i] = float(np.sum(x**2)) / visible[i]
    raw *= _class_weight(notes, window)
    return _shares(raw) if normalise else raw


def targets(notes: Notes, timbres: Timbres, scale: BinScale, window: int, sample_rate: int,
            sigma_bins: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence [n_bins], energy [n_bins], note table [len(notes), len(NOTE_FIELDS)]) of one window."""
    confidence = np.zeros(scale.n_bins, dtype=np.float32)
    energy = np.zeros(scale.n_bins, dtype=np.float64)
    classes = note_classes(notes.onset, notes.offset, window)
    visible = visible_samples(notes, window) / window
    shares = frequency_domain_energy(notes, timbres, window, sample_rate)
    fractional = scale.bin_of(notes.frequency)
    nearest = np.clip(np.rint(fractional), 0, scale.n_bins - 1).astype(np.int64)
    bins = np.arange(scale.n_bins)
    reach = int(np.ceil(4 * sigma_bins))
    for i in range(len(notes)):
        value = 1.0 if classes[i] in (STARTS_INSIDE, SUSTAINED) else min(visible[i] * 0.5, 0.3)
        confidence[nearest[i]] = max(confidence[nearest[i]], value)
        lo, hi = max(0, nearest[i] - reach), min(scale.n_bins, nearest[i] + reach + 1)
        energy[lo:hi] += shares[i] * np.exp(-0.5 * ((bins[lo:hi] - fractional[i]) / sigma_bins) ** 2)
    table = np.stack([nearest, notes.frequency, notes.velocity, notes.timbre, notes.onset, notes.offset, classes],
                     axis=1).astype(np.float32) if len(notes) else np.zeros((0, len(NOTE_FIELDS)), np.float32)
    return confidence, np.minimum(energy, 1.0).astype(np.float32), table


def draw_polyphonic(rng: np.random.Generator, polyphony: list[int], n_timbres: int, window: int,
                    scale: BinScale, random_phase: bool) -> Notes:
    """One window's notes: polyphony from the list, log-uniform pitch, onset/offset as documented above."""
    count = int(rng.choice(polyphony))
    onset_drawn = rng.integers(-(window - 1), window, count)
    offset = rng.integers(np.maximum(onset_drawn, 0), 2 * window + 1)
    return Notes(
        frequency=np.exp(rng.uniform(np.log(scale.fmin_hz), np.log(scale.fmax_hz), count)),
        velocity=rng.uniform(0.0, 1.0, count),
        timbre=rng.integers(0, n_timbres, count),
        onset_drawn=onset_drawn,
        offset=offset,
        phase=rng.uniform(0, 2 * np.pi, count) if random_phase else np.zeros(count),
    )


def single_note(rng: np.random.Generator, freq_hz: float, n_timbres: int, window: int, random_phase: bool,
                start: int = 0) -> Notes:
    """A note sounding through the window that began `start` samples before it (0: at its first sample)."""
    return Notes(
        frequency=np.array([freq_hz]), velocity=rng.uniform(0.2, 1.0, 1), timbre=rng.integers(0, n_timbres, 1),
        onset_drawn=np.array([-start]), offset=np.array([2 * window]),
        phase=rng.uniform(0, 2 * np.pi, 1) if random_phase else np.zeros(1),
    )
