"""Scores of the pitch model: multi-pitch P/R/F1 against note lists, single-note errors in cents."""

from __future__ import annotations

from typing import Any

import numpy as np

from musicid.families.pitch.bins import cents
from musicid.families.pitch.synth import STARTS_INSIDE, SUSTAINED

# Octave bands over the default range for the per-frequency table.
BANDS_HZ = (20, 40, 80, 160, 320, 640, 1280, 2560, 5000)


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "tp": tp, "fp": fp, "fn": fn}


def match_frame(predicted_hz: np.ndarray, notes: np.ndarray, tolerance_cents: float) -> tuple[int, int, int]:
    """(tp, fp, fn) of one window: greedy nearest matching within tolerance.

    Notes that start inside or sustain through the window (classes 2, 4) must be found; a
    prediction matching a note that ends inside or is short (classes 1, 3, partial targets) is
    neither credited nor counted as a false positive.
    """
    freqs, classes = notes[:, 1], notes[:, 6]
    required = np.isin(classes, (STARTS_INSIDE, SUSTAINED))
    if not len(predicted_hz):
        return 0, 0, int(required.sum())
    if not len(freqs):
        return 0, len(predicted_hz), 0
    distance = np.abs(cents(predicted_hz[:, None], freqs[None, :]))
    used_p, used_n, tp, excused = set(), set(), 0, 0
    for flat in np.argsort(distance, axis=None, kind="stable"):
        i, j = divmod(int(flat), len(freqs))
        if distance[i, j] > tolerance_cents:
            break
        if i in used_p or j in used_n:
            continue
        used_p.add(i), used_n.add(j)
        if required[j]:
            tp += 1
        else:
            excused += 1
    return tp, len(predicted_hz) - tp - excused, int(required.sum()) - tp


def multipitch(predictions: list[np.ndarray], notes: list[np.ndarray], tolerance_cents: float) -> dict[str, float]:
    totals = np.zeros(3, dtype=np.int64)
    for predicted, window_notes in zip(predictions, notes):
        totals += match_frame(predicted, window_notes, tolerance_cents)
    return prf(*map(int, totals))


def bin_level(confidence: np.ndarray, target: np.ndarray, threshold: float) -> dict[str, float]:
    """Exact-bin P/R/F1 of thresholded confidence against targets ≥ threshold (no tolerance)."""
    predicted, truth = confidence >= threshold, target >= threshold
    return prf(int((predicted & truth).sum()), int((predicted & ~truth).sum()), int((~predicted & truth).sum()))


def cents_summary(errors: np.ndarray) -> dict[str, Any]:
    errors = np.asarray(errors, dtype=np.float64)
    if not len(errors):
        return {"notes": 0}
    return {"notes": int(len(errors)), "median_abs_cents": float(np.median(np.abs(errors))),
            "mean_cents": float(np.mean(errors)), "std_cents": float(np.std(errors)),
            "within_50c": float(np.mean(np.abs(errors) <= 50.0)), "within_10c": float(np.mean(np.abs(errors) <= 10.0))}


def by_band(freqs: np.ndarray, errors: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for lo, hi in zip(BANDS_HZ[:-1], BANDS_HZ[1:]):
        mask = (freqs >= lo) & (freqs < hi if hi != BANDS_HZ[-1] else freqs <= hi)
        rows.append({"band_hz": f"{lo}-{hi}"} | cents_summary(errors[mask]))
    return rows


def format_table(summary: dict[str, Any]) -> str:
    """reports/pitch/eval/metrics.json as `musicid pitch metrics` prints it (torch-free: a quick command stays quick)."""
    lines = []
    if "polyphonic" in summary:
        m, b = summary["polyphonic"]["multipitch"], summary["polyphonic"]["bin_level"]
        lines.append(f"polyphonic test ({summary['polyphonic']['windows']} windows, peaks ≥ {summary['threshold']:.2f}, ±{summary['tolerance_cents']:g} c): "
                     f"P {m['precision']:.3f} R {m['recall']:.3f} F1 {m['f1']:.3f}; exact bins F1 {b['f1']:.3f}")
    if "sanity" in summary:
        s = summary["sanity"]["summary"]
        lines.append(f"single notes ({s['notes']}): median |error| {s['median_abs_cents']:.2f} c, "
                     f"within 50 c {s['within_50c']:.3f}, within 10 c {s['within_10c']:.3f}")
        for row in summary["sanity"]["by_band"]:
            if row.get("notes"):
                lines.append(f"  {row['band_hz']:>10} Hz: {row['notes']:>5} notes, median {row['median_abs_cents']:7.2f} c, "
                             f"within 50 c {row['within_50c']:.3f}")
    for row in summary.get("probes", []):
        lines.append(f"probe {row['hz']:g} Hz @ {row['offset']}: {row['mean_cents']:+.1f} ± {row['std_cents']:.1f} c "
                     f"(median |e| {row['median_abs_cents']:.1f}, within 50 c {row['within_50c']:.2f})")
    lat = summary["latency_ms"]
    lines.append(f"latency p50 {lat['p50']:.1f} ms / p95 {lat['p95']:.1f} ms per window; {lat['windows_per_s']:.0f} windows/s batched")
    return "\n".join(lines)
