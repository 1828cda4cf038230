"""Pitch-synth speed and the energy target's accuracy: what `pitch.synth` costs and how exact it is.

Prints, in one run:
  * generation windows/s of the sanity and polyphonic sets with 1 and --workers processes
    (render + targets + Zarr write, the stage's own `build_set`);
  * the energy target computed in the frequency domain (Σ A_k² × velocity² × exact mean squared
    ADSR, all notes at once) against measuring it on each note rendered alone: time per window and
    the speed-up, and the relative error of the per-note energy by how many periods of its
    fundamental the window shows.

    PYTHONPATH=src python benchmarks/pitch_synth.py [--windows 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from musicid.config import PitchSynthConfig
from musicid.families.pitch.bins import BinScale
from musicid.families.pitch.generate import build_set
from musicid.families.pitch.synth import draw_polyphonic, frequency_domain_energy, make_timbres, time_domain_energy, visible_samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=2000, help="polyphonic windows per measurement")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    cfg = PitchSynthConfig()
    scale, timbres = BinScale(cfg.n_bins, cfg.fmin_hz, cfg.fmax_hz), make_timbres(cfg.n_timbres, cfg.max_harmonics, cfg.seed)

    print("generation (render + targets + Zarr write), windows/s:")
    scratch = Path(tempfile.mkdtemp(prefix="pitch-synth-"))
    try:
        per_bin = max(1, args.windows // cfg.n_bins)
        small = cfg.model_copy(update={"samples_per_bin": {"train": per_bin}, "polyphonic_windows": {"train": args.windows},
                                       "shard_mb": 4.0})
        for kind in ("sanity", "polyphonic"):
            for workers in sorted({1, args.workers}):
                began = time.perf_counter()
                summary = build_set(small, kind, "train", scratch / f"{kind}-{workers}.zarr", workers=workers)
                seconds = time.perf_counter() - began
                print(f"  {kind:<11} {workers} worker(s): {summary['rows'] / seconds:8.0f} windows/s ({summary['rows']} in {seconds:.1f} s)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    rng = np.random.default_rng(0)
    windows = [draw_polyphonic(rng, cfg.polyphony, cfg.n_timbres, cfg.window_samples, scale, True) for _ in range(args.windows // 4)]
    began = time.perf_counter()
    fast = [frequency_domain_energy(n, timbres, cfg.window_samples, cfg.sample_rate, normalise=False) for n in windows]
    fast_s = time.perf_counter() - began
    began = time.perf_counter()
    slow = [time_domain_energy(n, timbres, cfg.window_samples, cfg.sample_rate, normalise=False) for n in windows]
    slow_s = time.perf_counter() - began
    notes = sum(len(n) for n in windows)
    print(f"\nenergy target, {len(windows)} polyphonic windows ({notes} notes):")
    print(f"  frequency domain {fast_s / len(windows) * 1e3:.3f} ms/window, rendered {slow_s / len(windows) * 1e3:.3f} ms/window: "
          f"{slow_s / fast_s:.1f}x faster")
    err, periods = [], []
    for n, f, s in zip(windows, fast, slow):
        keep = s > 0
        err += list(np.abs(f[keep] / s[keep] - 1))
        periods += list((visible_samples(n, cfg.window_samples) * n.frequency / cfg.sample_rate)[keep])
    err, periods = np.array(err), np.array(periods)
    print("  |relative error| of a note's energy (frequency domain vs its render), by periods of the fundamental in view:")
    for lo, hi in ((0, 1), (1, 4), (4, 20), (20, np.inf)):
        pick = (periods >= lo) & (periods < hi)
        if pick.any():
            print(f"    {lo:>3}–{hi:<4} periods: {pick.sum():5d} notes, median {np.median(err[pick]):.4f}, "
                  f"p99 {np.percentile(err[pick], 99):.4f}, max {err[pick].max():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
