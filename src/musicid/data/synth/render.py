"""Rendering: plan a version of a work (tempo, key, instruments, mix) and render it to audio."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import signal

from musicid.config import SynthConfig
from musicid.data.synth.compose import (
    _BEATS_PER_BAR,
    _CYMBALS,
    _STYLES,
    _TAG_PALETTE,
    MONO_RATE,
    NOTE_NAMES,
    PEAK_DBFS,
    STEREO_RATE,
    Chord,
    Part,
    Work,
    _chord_at,
    _fit_register,
    _stream,
    compose_work,
    version_rng,
    work_rng,
)
from musicid.data.synth.instruments import make_kit, synth_note

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
    audio, sr, meta, _ = render_version_notes(work, version_index, cfg, rng)
    return audio, sr, meta


PITCHED_BUSES = ("lead", "comp", "bass")


def render_version_notes(
    work: Work, version_index: int, cfg: SynthConfig, rng: np.random.Generator
) -> tuple[np.ndarray, int, dict[str, Any], np.ndarray]:
    """As `render_version`, plus the pitched notes that sound in it: (n, 4) float64 rows of
    (onset s, offset s, MIDI pitch, velocity 0..1.2), sorted by onset; drums are not notes."""
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
    duration = n / sr
    notes = np.array([(t, min(t + gate, duration), midi, vel) for bus in PITCHED_BUSES
                      for t, midi, gate, vel in events[bus]], dtype=np.float64).reshape(-1, 4)
    notes = notes[np.lexsort((notes[:, 2], notes[:, 0]))] if len(notes) else notes
    return audio.astype(np.float32, copy=False), sr, meta, notes


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
