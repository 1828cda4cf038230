"""Slice strategies put windows where they say: out of silence, on beats, on loud or repeated material."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicid.audio.slicing import STRATEGIES, TrackAnalysis, choose_starts
from musicid.config import PrepareConfig, ShardsConfig
from musicid.data.splits import plan_queries
from musicid.store.build import strategy_windows

SR = 8000
BEAT_S = 0.5  # 120 BPM


def _note(freqs: list[float], seconds: float, rng: np.random.Generator, gain: float = 0.2) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    tone = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
    return (gain * tone + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def _clicks(seconds: float, start_s: float) -> tuple[np.ndarray, np.ndarray]:
    """A kick-like click every BEAT_S: the beats librosa should find."""
    signal = np.zeros(int(seconds * SR), dtype=np.float32)
    times = np.arange(0.0, seconds - 0.1, BEAT_S)
    decay = np.exp(-np.arange(int(0.08 * SR)) / (0.015 * SR)) * np.sin(2 * np.pi * 90 * np.arange(int(0.08 * SR)) / SR)
    for time in times:
        begin = int(time * SR)
        signal[begin : begin + len(decay)] += 0.8 * decay
    return signal, times + start_s


@pytest.fixture(scope="module")
def song() -> dict:
    """6 s silence | A (8 s) | B (8 s, loud) | A again | C (8 s), with a click on every beat after the silence."""
    rng = np.random.default_rng(0)
    chords_a = [[261.6, 329.6, 392.0], [220.0, 261.6, 329.6]]
    section_a = np.concatenate([_note(chord, 1.0, rng) for chord in chords_a * 4])
    section_b = np.concatenate([_note([f], 1.0, rng, gain=0.7) for f in (311.1, 370.0, 466.2, 554.4) * 2])
    section_c = np.concatenate([_note([f, f * 1.5], 1.0, rng) for f in (293.7, 349.2, 415.3, 493.9) * 2])
    music = np.concatenate([section_a, section_b, section_a, section_c])
    clicks, beats = _clicks(len(music) / SR, start_s=6.0)
    signal = np.concatenate([np.zeros(6 * SR, np.float32), music + 0.5 * clicks])
    return {"signal": signal, "analysis": TrackAnalysis(signal, SR), "beats": beats,
            "silence": (0.0, 6.0), "loud": (14.0, 22.0), "repeats": [(6.0, 14.0), (22.0, 30.0)]}


def _inside(start: float, length: float, region: tuple[float, float], slack: float = 0.5) -> bool:
    return region[0] - slack <= start and start + length <= region[1] + slack


def test_random_spreads_over_the_whole_track(song: dict) -> None:
    starts = choose_starts(song["analysis"], 2.0, 200, "random", np.random.default_rng(1))
    assert len(starts) == 200 and starts.min() >= 0 and starts.max() <= song["analysis"].duration_s - 2.0
    assert (starts < 6.0).sum() > 10  # random does land in the silent intro


def test_silence_aware_never_starts_in_silence(song: dict) -> None:
    analysis = song["analysis"]
    starts = choose_starts(analysis, 2.0, 200, "silence_aware", np.random.default_rng(2))
    assert len(starts) == 200 and starts.min() >= song["silence"][1] - 0.1
    frames = np.round(starts / analysis.frame_s).astype(int)
    assert not analysis.silent[frames].any()


def test_high_energy_takes_the_loud_section_first(song: dict) -> None:
    starts = choose_starts(song["analysis"], 2.0, 3, "high_energy", np.random.default_rng(3))
    assert all(_inside(s, 2.0, song["loud"]) for s in starts), starts
    assert np.diff(np.sort(starts)).min() >= 1.0  # spread at least half a window apart


def test_beat_aware_starts_on_beats(song: dict) -> None:
    starts = choose_starts(song["analysis"], 2.0, 20, "beat_aware", np.random.default_rng(4))
    nearest = np.abs(starts[:, None] - song["beats"][None, :]).min(axis=1)
    assert len(starts) == 20 and nearest.max() <= 0.07, nearest


def test_repeated_section_aware_picks_repeated_material(song: dict) -> None:
    starts = choose_starts(song["analysis"], 2.0, 4, "repeated_section_aware", np.random.default_rng(5))
    assert all(any(_inside(s, 2.0, region, slack=1.0) for region in song["repeats"]) for s in starts), starts


def test_hybrid_mixes_strategies_and_meets_the_count(song: dict) -> None:
    starts = choose_starts(song["analysis"], 2.0, 8, "hybrid", np.random.default_rng(6))
    assert len(starts) == 8 and starts.min() >= song["silence"][1] - 0.1
    assert sum(_inside(s, 2.0, song["loud"], slack=0.0) for s in starts) >= 2  # its high-energy quarter


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_copes_with_silence_and_short_tracks(strategy: str) -> None:
    silent = TrackAnalysis(np.zeros(10 * SR, np.float32), SR)
    starts = choose_starts(silent, 2.0, 5, strategy, np.random.default_rng(0))
    assert len(starts) == 5 and starts.min() >= 0 and starts.max() <= 8.0
    assert len(choose_starts(TrackAnalysis(np.ones(SR, np.float32), SR), 2.0, 5, strategy, np.random.default_rng(0))) == 0


def test_unknown_strategy_names_the_allowed_ones(song: dict) -> None:
    with pytest.raises(ValueError, match="allowed: random, silence_aware"):
        choose_starts(song["analysis"], 2.0, 1, "loudest", np.random.default_rng(0))


def test_shards_strategy_windows(song: dict) -> None:
    cfg = ShardsConfig(strategy="silence_aware", windows_per_track=12, window_s=2.0)
    frames, samples = strategy_windows(song["signal"], cfg, np.random.default_rng(0))
    assert frames.shape == (12, cfg.window_samples) and samples.min() >= 6 * SR - 800
    for frame, start in zip(frames, samples):
        assert np.array_equal(frame, song["signal"][start : start + cfg.window_samples])
    grid_like = strategy_windows(song["signal"], cfg.model_copy(update={"windows_per_track": 0}), np.random.default_rng(0))
    assert len(grid_like[0]) == (len(song["signal"]) - cfg.window_samples) // cfg.hop_samples + 1


def test_prepare_plans_queries_with_a_strategy(song: dict, tmp_path: Path) -> None:
    sf.write(tmp_path / "song.wav", song["signal"], SR)
    track = {"track_id": "t", "work_id": "w", "path": "song.wav", "duration_s": len(song["signal"]) / SR}
    cfg = PrepareConfig(query_lengths_s=[2.0, 5.0], queries_per_track=3, query_strategy="silence_aware")
    queries = plan_queries([track], cfg, audio_root=tmp_path)
    assert len(queries) == 6 and min(q["start_s"] for q in queries) >= 5.9
    assert plan_queries([track], cfg, audio_root=tmp_path) == queries  # seeded
    randomly = plan_queries([track], cfg.model_copy(update={"query_strategy": "random"}))
    assert len(randomly) == 6 and randomly != queries
