"""Evaluate a pitch model on held-out windows: polyphonic P/R/F1, single-note cents, phase probes.

* polyphonic test set: peaks of the confidence ≥ `threshold` (None: the model's, chosen on validation), matched to the note list within
  `tolerance_cents` (multi-pitch P/R/F1), plus exact-bin P/R/F1 against the stored targets;
* sanity test set (one note per window at a random frequency inside every bin): the most
  confident pitch's error in cents, overall and per octave band;
* probes: `probe_notes` notes at each of `probe_hz`, each starting at phase 0 at its onset,
  windowed at `probe_offsets` samples after the onset ("mid": one window in). A model trained
  without random phase has only seen windows that start at a note's onset with phase 0.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from musicid.config import PitchEvaluateConfig, PitchSynthConfig
from musicid.families.pitch.bins import cents
from musicid.families.pitch.generate import scale_of
from musicid.families.pitch.io import LoadedPitchModel
from musicid.families.pitch.metrics import bin_level, by_band, cents_summary, multipitch
from musicid.families.pitch.model import frame_pitches_hz
from musicid.families.pitch.synth import make_timbres, render_window, single_note
from musicid.fsutil import write_json
from musicid.store import WindowDataset

CHUNK = 512  # windows predicted per read


def _predict_store(loaded: LoadedPitchModel, ds: WindowDataset) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """(confidence, energy, note lists, confidence targets) of every row, chunk by chunk."""
    conf, energy, notes, target = [], [], [], []
    for start in range(0, len(ds), CHUNK):
        batch = ds.read_batch(slice(start, min(len(ds), start + CHUNK)))
        c, e = loaded.predict_windows(batch["waveform"].numpy())
        conf.append(c), energy.append(e), target.append(batch["confidence"].numpy().astype(np.float32))
        notes += [n[: int(k)] for n, k in zip(batch["notes"].numpy(), batch["n_notes"].numpy())]
    return np.concatenate(conf), np.concatenate(energy), notes, np.concatenate(target)


def polyphonic_scores(loaded: LoadedPitchModel, ds: WindowDataset, cfg: PitchEvaluateConfig) -> dict[str, Any]:
    threshold = loaded.threshold if cfg.threshold is None else cfg.threshold
    conf, energy, notes, target = _predict_store(loaded, ds)
    predicted = [frame_pitches_hz(c, e, loaded.spec.scale, threshold, cfg.tolerance_cents)[1] for c, e in zip(conf, energy)]
    by_polyphony = {}
    counts = np.array([len(n) for n in notes])
    for lo, hi in ((1, 1), (2, 3), (4, 7), (8, 16)):
        pick = np.flatnonzero((counts >= lo) & (counts <= hi))
        if len(pick):
            by_polyphony[f"{lo}-{hi}" if lo != hi else str(lo)] = multipitch(
                [predicted[i] for i in pick], [notes[i] for i in pick], cfg.tolerance_cents)
    return {"windows": len(ds), "multipitch": multipitch(predicted, notes, cfg.tolerance_cents),
            "bin_level": bin_level(conf, target, threshold), "by_polyphony": by_polyphony}


def single_note_errors(loaded: LoadedPitchModel, windows: np.ndarray, truth_hz: np.ndarray) -> np.ndarray:
    conf, energy = loaded.predict_windows(windows)
    estimate = np.array([loaded.top_pitch(c, e) for c, e in zip(conf, energy)])
    return cents(estimate, truth_hz)


def sanity_scores(loaded: LoadedPitchModel, ds: WindowDataset) -> dict[str, Any]:
    errors, truth = [], []
    for start in range(0, len(ds), CHUNK):
        batch = ds.read_batch(slice(start, min(len(ds), start + CHUNK)))
        hz = batch["notes"].numpy()[:, 0, 1].astype(np.float64)
        errors.append(single_note_errors(loaded, batch["waveform"].numpy(), hz))
        truth.append(hz)
    errors_all, truth_all = np.concatenate(errors), np.concatenate(truth)
    return {"summary": cents_summary(errors_all), "by_band": by_band(truth_all, errors_all),
            "_points": (truth_all, errors_all)}


def probe_windows(synth: PitchSynthConfig, freq_hz: float, offset: int | str, count: int, seed: int) -> np.ndarray:
    """`count` single notes at `freq_hz` (random timbre and velocity, phase 0 at onset), cut at `offset`."""
    rng = np.random.default_rng([seed, int(freq_hz * 1000)])
    timbres = make_timbres(synth.n_timbres, synth.max_harmonics, synth.seed)
    start = synth.window_samples if offset == "mid" else int(offset)
    return np.stack([render_window(single_note(rng, freq_hz, synth.n_timbres, synth.window_samples, False, start),
                                   timbres, synth.window_samples, synth.sample_rate) for _ in range(count)])


def probe_scores(loaded: LoadedPitchModel, synth: PitchSynthConfig, cfg: PitchEvaluateConfig) -> list[dict[str, Any]]:
    rows = []
    for hz in cfg.probe_hz:
        for offset in cfg.probe_offsets:
            windows = probe_windows(synth, hz, offset, cfg.probe_notes, cfg.seed)
            errors = single_note_errors(loaded, windows, np.full(len(windows), hz))
            rows.append({"hz": hz, "offset": offset} | cents_summary(errors))
    return rows


def latency(loaded: LoadedPitchModel, window: int, calls: int = 30) -> dict[str, float]:
    """ms per single window (model loaded), and windows/s in batches of 128."""
    x = np.random.default_rng(0).standard_normal((128, window)).astype(np.float32) * 0.1
    loaded.predict_windows(x[:1])
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        loaded.predict_windows(x[:1])
        times.append((time.perf_counter() - began) * 1000)
    began = time.perf_counter()
    loaded.predict_windows(x)
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95)),
            "windows_per_s": 128 / (time.perf_counter() - began)}


def plot_errors(points: tuple[np.ndarray, np.ndarray], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth, errors = points
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=110)
    ax.scatter(truth, np.clip(errors, -1300, 1300), s=3, alpha=0.5)
    ax.axhspan(-50, 50, color="green", alpha=0.1, label="±50 cents")
    ax.set_xscale("log"), ax.set_xlabel("note frequency (Hz)"), ax.set_ylabel("error (cents, clipped ±1300)")
    ax.set_title("single notes (sanity test set): most confident pitch"), ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def evaluate_model(loaded: LoadedPitchModel, shards: Path, synth: PitchSynthConfig, cfg: PitchEvaluateConfig,
                   out_dir: Path) -> dict[str, Any]:
    """Score the held-out sets and probes; write metrics.json and errors.png into `out_dir`."""
    summary: dict[str, Any] = {"model_signature": loaded.signature,
                               "threshold": loaded.threshold if cfg.threshold is None else cfg.threshold,
                               "tolerance_cents": cfg.tolerance_cents, "random_phase_trained":
                               loaded.info.get("synth", {}).get("random_phase")}
    poly, sanity = shards / "polyphonic-test.zarr", shards / "sanity-test.zarr"
    if poly.exists() and len(ds := WindowDataset(poly)):
        summary["polyphonic"] = polyphonic_scores(loaded, ds, cfg)
    if sanity.exists() and len(ds := WindowDataset(sanity)):
        scores = sanity_scores(loaded, ds)
        plot_errors(scores.pop("_points"), out_dir / "errors.png")
        summary["sanity"] = scores
    summary["probes"] = probe_scores(loaded, synth, cfg)
    summary["latency_ms"] = latency(loaded, synth.window_samples)
    write_json(out_dir / "metrics.json", summary)
    return summary


def flat_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The registry's and MLflow's view of an evaluation."""
    out: dict[str, float] = {}
    if "polyphonic" in summary:
        m = summary["polyphonic"]["multipitch"]
        out |= {"polyphonic_f1": m["f1"], "polyphonic_precision": m["precision"], "polyphonic_recall": m["recall"],
                "polyphonic_bin_f1": summary["polyphonic"]["bin_level"]["f1"]}
    if "sanity" in summary:
        s = summary["sanity"]["summary"]
        out |= {"sanity_median_abs_cents": s["median_abs_cents"], "sanity_within_50c": s["within_50c"]}
    for row in summary.get("probes", []):
        out[f"probe_{row['hz']:g}hz_{row['offset']}_mean_cents"] = row["mean_cents"]
        out[f"probe_{row['hz']:g}hz_{row['offset']}_std_cents"] = row["std_cents"]
    out |= {"latency_p50_ms": summary["latency_ms"]["p50"], "latency_p95_ms": summary["latency_ms"]["p95"]}
    return out
