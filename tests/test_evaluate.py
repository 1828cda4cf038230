from __future__ import annotations

import numpy as np
import pytest
import torch

from musicid.audio.augment import NoiseBank
from musicid.families.fingerprint.queries import APART_CONDITIONS, MAIN_CONDITIONS, render_query
from musicid.families.fingerprint.evaluate import summarize
from musicid.families.fingerprint.open_set import OpenSetThreshold

RATE = 8000


@pytest.fixture(scope="module")
def track() -> np.ndarray:
    t = np.arange(RATE * 20) / RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 2 * t)) / 2).astype(np.float32)


@pytest.fixture(scope="module")
def bank() -> NoiseBank:
    return NoiseBank(RATE, ("pink", "brown", "babble", "hum"), seconds=12.0)


@pytest.mark.parametrize("condition", MAIN_CONDITIONS + APART_CONDITIONS)
def test_each_condition_gives_a_deterministic_query_of_the_planned_length(track, bank, condition) -> None:
    bed = torch.from_numpy(track[::-1].copy())[None, :]
    first, details = render_query(track, RATE, 3.0, 2.0, condition, (0.0, 10.0), bank, seed=5, music_bed=bed)
    again, _ = render_query(track, RATE, 3.0, 2.0, condition, (0.0, 10.0), bank, seed=5, music_bed=bed)
    assert first.dtype == np.float32 and len(first) == 2 * RATE
    assert np.array_equal(first, again) and details["condition"] == condition
    assert np.abs(first).max() <= 1.0 + 1e-6
    clean = track[3 * RATE : 5 * RATE]
    assert not np.allclose(first, clean, atol=1e-3), "a degradation must change the clip"


def test_unknown_condition_is_refused(track, bank) -> None:
    with pytest.raises(ValueError, match="allowed"):
        render_query(track, RATE, 0.0, 1.0, "vinyl", (0.0, 10.0), bank, seed=0, music_bed=torch.zeros(1, 10))


def test_summary_counts_hits_per_length_and_keeps_speed_pitch_apart() -> None:
    rows = [
        {"condition": "noise", "duration_s": 1.0, "top1": True, "top5": True, "offset_ok": True, "offset_error_s": 0.1, "latency_ms": 5},
        {"condition": "noise", "duration_s": 1.0, "top1": False, "top5": True, "offset_ok": False, "offset_error_s": None, "latency_ms": 7},
        {"condition": "telephone", "duration_s": 3.0, "top1": True, "top5": True, "offset_ok": False, "offset_error_s": 2.0, "latency_ms": 9},
        {"condition": "pitch", "duration_s": 3.0, "top1": False, "top5": False, "offset_ok": False, "offset_error_s": None, "latency_ms": 11},
    ]
    metrics = summarize(rows, ["noise", "telephone", "pitch"])
    assert metrics["by_condition"]["noise"]["1s"] == {"top1": 0.5, "top5": 1.0, "n": 2}
    assert metrics["main"]["by_length"]["3s"] == {"top1": 1.0, "top5": 1.0, "n": 1}  # pitch is not a main condition
    assert metrics["main"]["top1"] == round(2 / 3, 4)
    assert metrics["offset_accuracy"] == 0.5 and metrics["queries"] == 4
    assert metrics["latency_ms"]["p50"] == 8.0


def test_open_set_threshold_lets_through_at_most_the_target_share_at_every_length() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(400):
        length, segments = ((1.0, 1), (3.0, 9))[i % 2]
        right = i % 5 != 0  # 80 % of in-catalog answers are right
        # wrong references score lower on longer queries, as they do on real music
        impostor = float(rng.uniform(0.3, 0.9) if segments == 1 else rng.uniform(0.0, 0.6))
        rows.append({"condition": "noise", "duration_s": length, "top1": right, "top5": right, "offset_ok": right,
                     "offset_error_s": 0.0 if right else None, "latency_ms": 1.0, "segments": segments,
                     "score": float(rng.uniform(0.6, 1.0)), "impostor_score": impostor})
    open_set = summarize(rows, ["noise"], target_fpr=0.05)["open_set"]
    assert open_set["segments"] == [1.0, 9.0] and open_set["min_scores"][0] > open_set["min_scores"][1]
    curve = OpenSetThreshold.from_dict(open_set)
    for length, segments in (("1s", 1), ("3s", 9)):
        impostors = np.array([r["impostor_score"] for r in rows if r["segments"] == segments])
        assert (impostors >= curve.at(segments)).mean() == open_set["by_length"][length]["fpr"] <= 0.05
        # tight: a little lower would let more than the target through
        assert (impostors >= curve.at(segments) - 1e-3).mean() > 0.05 - 2 / len(impostors)
        accepted = [r["top1"] and r["score"] >= curve.at(segments) for r in rows if r["segments"] == segments]
        assert open_set["by_length"][length]["tpr"] == round(float(np.mean(accepted)), 4)
    assert curve.at(3) < curve.at(1) and curve.at(100) == curve.at(9)  # interpolated between, flat beyond
    assert summarize(rows, ["noise"])["open_set"] is None  # no target: no calibration
