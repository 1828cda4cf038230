"""Instruments: band-limited wavetable timbres with envelopes, and synthesised drum kits."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import signal

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
