"""Single-note pitch accuracy: the musicid pitch model beside torchcrepe on the same held-out notes.

One run: the sanity set's held-out single notes (one per --step bins across 20–5000 Hz, random
timbre, velocity and phase; `pitch.synth` seeds that no model trained on) plus the probes at 220 /
440 / 880 Hz at window offsets 0, +512 and mid-note. musicid reads the 44.1 kHz windows; torchcrepe
(its own venv .bench/crepe-venv; it ships its weights) gets each window
resampled to 16 kHz and answers with one CREPE frame at the window's centre (batched torchcrepe.infer). CREPE's range is 31.7–2006 Hz,
so the table has rows for all notes and for notes inside CREPE's range. Seconds per 1000 windows on
this CPU (2 threads).

    PYTHONPATH=src python benchmarks/pitch_crepe.py --model models/pitch [--step 4] [--crepe-model full]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(".bench")
VENV = BENCH / "crepe-venv"
CREPE_RANGE = (31.7, 2006.0)


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not (VENV / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        # torchcrepe imports torchaudio: the project's own torch/torchaudio pair (a newer torch with an older
        # torchaudio fails to load its extension), then the peer
        subprocess.run(pip + ["torch==2.14.1", "torchaudio==2.11.0"], check=True)
        subprocess.run(pip + ["torchcrepe", "scipy"], check=True)
        (VENV / ".installed").touch()
    return python


def held_out_notes(step: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(windows, true Hz, label) of single notes no training set holds (test split, own seed)."""
    from musicid.config import PitchEvaluateConfig, PitchSynthConfig
    from musicid.families.pitch.evaluate import probe_windows
    from musicid.families.pitch.generate import make_rows

    cfg = PitchSynthConfig(seed=seed)
    windows, values = make_rows(cfg, "sanity", "test", 0, cfg.n_bins)
    pick = np.arange(0, cfg.n_bins, step)
    out_w, out_hz, labels = [windows[pick]], [values["notes"][pick, 0, 1].astype(np.float64)], ["sanity"] * len(pick)
    probes = PitchEvaluateConfig()
    for hz in probes.probe_hz:
        for offset in probes.probe_offsets:
            w = probe_windows(cfg, hz, offset, probes.probe_notes, probes.seed)
            out_w.append(w), out_hz.append(np.full(len(w), hz))
            labels += [f"{hz:g} Hz @ {offset}"] * len(w)
    return np.concatenate(out_w), np.concatenate(out_hz), labels


def summary(errors: np.ndarray) -> str:
    if not len(errors):
        return "–"
    return f"{np.median(np.abs(errors)):7.2f} c median |e|, {np.mean(np.abs(errors) <= 50):.3f} within 50 c"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/pitch", help="musicid pitch model folder")
    ap.add_argument("--step", type=int, default=4, help="one held-out note every STEP bins")
    ap.add_argument("--seed", type=int, default=12345, help="pitch.synth seed of the held-out notes (not the training seed)")
    ap.add_argument("--crepe-model", default="full", choices=["full", "tiny"])
    ap.add_argument("--out", type=Path, default=Path("reports/pitch/crepe.json"))
    args = ap.parse_args(argv)

    from musicid.families.pitch.bins import cents
    from musicid.families.pitch.evaluate import single_note_errors
    from musicid.families.pitch.io import load_model

    python = ensure_venv()
    windows, truth, labels = held_out_notes(args.step, args.seed)
    labels = np.array(labels)
    loaded = load_model(args.model, "cpu")
    began = time.perf_counter()
    ours = single_note_errors(loaded, windows, truth)
    ours_s = time.perf_counter() - began
    BENCH.mkdir(exist_ok=True)
    np.savez(BENCH / "crepe-windows.npz", windows=windows, sample_rate=loaded.sample_rate)
    subprocess.run([str(python), str(Path(__file__).parent / "pitch" / "peer_crepe.py"), str(BENCH / "crepe-windows.npz"),
                    str(BENCH / "crepe-out.json"), "--model", args.crepe_model], check=True)
    peer = json.loads((BENCH / "crepe-out.json").read_text())
    theirs = cents(np.maximum(np.array(peer["frequency_hz"]), 1e-3), truth)

    inside = (truth >= CREPE_RANGE[0]) & (truth <= CREPE_RANGE[1])
    rows = [("single notes 20–5000 Hz", labels == "sanity"),
            (f"single notes {CREPE_RANGE[0]:g}–{CREPE_RANGE[1]:g} Hz (CREPE's range)", (labels == "sanity") & inside)]
    rows += [(label, labels == label) for label in dict.fromkeys(labels) if label != "sanity"]
    print(f"\n{'notes':<44}{'n':>5}  {'musicid ' + Path(args.model).name:<44}  torchcrepe {args.crepe_model}")
    for name, pick in rows:
        print(f"{name:<44}{int(pick.sum()):>5}  {summary(ours[pick]):<44}  {summary(theirs[pick])}")
    per_k = lambda s: 1000 * s / len(windows)  # noqa: E731
    print(f"{'seconds per 1000 windows (CPU)':<44}{'':>5}  {per_k(ours_s):<44.2f}  {per_k(peer['seconds']):.2f} "
          f"(incl. resampling to 16 kHz)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": str(args.model), "signature": loaded.signature, "peer": peer | {"frequency_hz": None},
                                    "rows": {name: {"n": int(p.sum()), "musicid_median_abs": float(np.median(np.abs(ours[p]))) if p.any() else None,
                                                    "musicid_within_50c": float(np.mean(np.abs(ours[p]) <= 50)) if p.any() else None,
                                                    "peer_median_abs": float(np.median(np.abs(theirs[p]))) if p.any() else None,
                                                    "peer_within_50c": float(np.mean(np.abs(theirs[p]) <= 50)) if p.any() else None}
                                             for name, p in rows},
                                    "seconds_per_1000": {"musicid": per_k(ours_s), "torchcrepe": per_k(peer["seconds"])}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
