"""Note transcription: the musicid transcriber beside Spotify's basic-pitch on the same held-out chorales.

One run: the test pieces of a labelled source (`data/labelled/pitch/<source>/`, split `test`, never
trained on; the Bach chorales rendered with fluidsynth by default), whole recordings. musicid: the onset
and frame networks on CPU, post-processed as their evaluation chose on the validation pieces
(reports/pitch/transcribe/metrics.json, when it evaluated these networks; else params.yaml's
`pitch_transcribe`). basic-pitch (its own venv
.bench/basic-pitch-venv; it ships its ICASSP 2022 model, run in its TFLite serialisation by
tflite-runtime) with `basic_pitch.inference.predict`'s default post-processing: onset_threshold 0.5,
frame_threshold 0.3, minimum_note_length 127.70 ms, melodia_trick on, no frequency limits. Both are
scored against the same reference, every note of the MIDI labels (the number of reference notes outside
musicid's pitch range is reported), with mir_eval: note P/R/F1 onset only and onset + offset
(`pitch_transcribe.onset_tolerance_s`, `offset_ratio`), the mean over pieces, with pooled counts in the
JSON. Speed: seconds of compute per audio minute on this CPU, 2 threads each, decoding and model loading
left out (musicid reads the audio at its own rate; basic-pitch's decode + resampling to 22.05 kHz is
reported apart).

    PYTHONPATH=src python benchmarks/transcribe_basic_pitch.py [--labelled data/labelled/pitch] \
        [--onset models/pitch-onset --frame models/pitch-frame] [--source chorales] [--split test] \
        [--evaluation reports/pitch/transcribe/metrics.json] [--out reports/pitch/basic-pitch.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(".bench")
VENV = BENCH / "basic-pitch-venv"
# basic-pitch 0.4.0 asks for the whole of tensorflow<2.15.1 on Python >= 3.11 (tflite-runtime only below 3.11):
# its own requirements are installed here with tflite-runtime in tensorflow's place, then basic-pitch --no-deps.
# tflite-runtime 2.14.0 is built against numpy 1.x; resampy 0.4.2 imports pkg_resources (setuptools<70).
PEER_REQUIREMENTS = ["setuptools<70", "numpy==1.26.4", "tflite-runtime==2.14.0", "librosa==0.11.0", "mir-eval==0.8.2",
                     "pretty-midi==0.2.11.post0", "resampy==0.4.2", "scikit-learn==1.9.1", "scipy==1.17.1",
                     "typing-extensions"]
PEER = "basic-pitch==0.4.0"
METRICS = ("precision", "recall", "f1")


def peer_env() -> dict[str, str]:
    """The environment without PYTHONPATH (src/ would show the peer's pip and python musicid), 2 threads per pool."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env | {k: "2" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not (VENV / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, *PEER_REQUIREMENTS], check=True, env=peer_env())
        subprocess.run([*pip, "--no-deps", PEER], check=True, env=peer_env())
        (VENV / ".installed").touch()
    return python


def score(refs: list[np.ndarray], ests: list[np.ndarray], cfg: Any) -> dict[str, Any]:
    """mir_eval note scores of each piece → their mean, and pooled counts (matches summed over pieces)."""
    from musicid.families.pitch.transcribe_eval import note_scores

    per = [note_scores(ref, est, cfg) for ref, est in zip(refs, ests, strict=True)]
    n_ref, n_est = sum(len(r) for r in refs), sum(len(e) for e in ests)
    mean = {kind: {m: float(np.mean([p[kind][m] for p in per])) if per else 0.0 for m in METRICS}
            for kind in ("onset", "onset_offset")}
    pooled: dict[str, Any] = {"reference_notes": n_ref, "estimated_notes": n_est}
    for kind in ("onset", "onset_offset"):
        matched = int(sum(round(p[kind]["recall"] * len(r)) for p, r in zip(per, refs, strict=True)))
        precision, recall = matched / n_est if n_est else 0.0, matched / n_ref if n_ref else 0.0
        pooled[kind] = {"matched": matched, "precision": precision, "recall": recall,
                        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}
    return {"note": mean, "pooled": pooled, "per_track": per}


def run_musicid(args: argparse.Namespace, paths: list[Path], cfg: Any, window_frames: int) -> dict[str, Any]:
    import torch

    from musicid.config import TranscribeConfig
    from musicid.families.pitch.frames import decode_labelled
    from musicid.families.pitch.transcribe import evaluated_post_processing, load_transcriber, notes_from_probs

    torch.set_num_threads(2)
    began = time.perf_counter()
    tr = load_transcriber(args.onset, args.frame, device="cpu", window_frames=window_frames)
    load_s = time.perf_counter() - began
    cfg = TranscribeConfig(**(cfg.model_dump(exclude={"registry"}) | evaluated_post_processing(tr, args.evaluation)))
    rate = tr.spec.sample_rate
    est, seconds, audio_s = [], [], []
    for i, path in enumerate(paths):
        audio = decode_labelled(path, rate)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if i == 0:  # one untimed warm-up (first-call allocations), as the peer gets
                notes_from_probs(*tr.probabilities(audio[: 10 * rate]), tr.fps, tr.spec.min_midi, cfg)
            began = time.perf_counter()
            onset_p, frame_p = tr.probabilities(audio)
            est.append(notes_from_probs(onset_p, frame_p, tr.fps, tr.spec.min_midi, cfg))
            seconds.append(time.perf_counter() - began)
        audio_s.append(len(audio) / rate)
    return {"est": est, "seconds": seconds, "audio_s": audio_s, "load_seconds": load_s, "signatures": list(tr.signatures),
            "post_processing": cfg.post_processing(),
            "pitch_range": [tr.spec.min_midi, tr.spec.min_midi + tr.spec.n_pitches - 1], "sample_rate": rate}


def run_peer(python: Path, paths: list[Path]) -> dict[str, Any]:
    BENCH.mkdir(exist_ok=True)
    files, out = BENCH / "basic-pitch-in.json", BENCH / "basic-pitch-out.json"
    files.write_text(json.dumps([str(p.resolve()) for p in paths]))
    subprocess.run([str(python), str(Path(__file__).parent / "pitch" / "peer_basic_pitch.py"), str(files), str(out),
                    "--threads", "2"], check=True, env=peer_env())
    peer = json.loads(out.read_text())
    files.unlink(), out.unlink()
    return peer


def cell(scores: dict[str, float]) -> str:
    return " / ".join(f"{scores[m]:.3f}" for m in METRICS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labelled", type=Path, default=Path("data/labelled/pitch"), help="labelled pitch data folder")
    ap.add_argument("--onset", type=Path, default=Path("models/pitch-onset"), help="musicid onset network folder")
    ap.add_argument("--frame", type=Path, default=Path("models/pitch-frame"), help="musicid frame network folder")
    ap.add_argument("--source", default="chorales", help="labelled source (a folder under --labelled)")
    ap.add_argument("--split", default="test", help="tracks of this split (tracks.csv)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="pitch_transcribe post-processing + scoring")
    ap.add_argument("--evaluation", type=Path, default=Path("reports/pitch/transcribe/metrics.json"),
                    help="pitch-transcribe-evaluate's report: its tuned post-processing, when it evaluated these networks")
    ap.add_argument("--out", type=Path, default=Path("reports/pitch/basic-pitch.json"))
    args = ap.parse_args(argv)

    from musicid.config import load_params
    from musicid.families.pitch.labelled import read_labels, read_tracks, track_style
    from musicid.families.pitch.transcribe_eval import by_style, flat_note_scores

    started, load_average = time.perf_counter(), os.getloadavg()
    params = load_params(args.params)
    cfg = params.pitch_transcribe
    source_dir = args.labelled / args.source
    tracks = [t for t in read_tracks(source_dir) if t["split"] == args.split]
    if not tracks:
        print(f"{source_dir}/tracks.csv: no {args.split} tracks", file=sys.stderr)
        return 1
    paths = [source_dir / "audio" / f"{t['track']}.flac" for t in tracks]
    refs = [read_labels(source_dir / "labels" / f"{t['track']}.mid") for t in tracks]

    python = ensure_venv()
    ours = run_musicid(args, paths, cfg, params.pitch_notes.window_frames)
    peer = run_peer(python, paths)
    theirs_est = [np.array(f["notes"], dtype=np.float64).reshape(-1, 4) for f in peer["files"]]
    ours_scores, theirs_scores = score(refs, ours["est"], cfg), score(refs, theirs_est, cfg)

    lo, hi = ours["pitch_range"]
    n_ref = sum(len(r) for r in refs)
    outside = int(sum(((r[:, 2] < lo) | (r[:, 2] > hi)).sum() for r in refs))
    minutes = sum(ours["audio_s"]) / 60
    per_min = {"musicid": sum(ours["seconds"]) / minutes, "basic-pitch": sum(f["seconds"] for f in peer["files"]) / minutes}
    decode_per_min = sum(f["decode_seconds"] for f in peer["files"]) / minutes

    ours_name = f"musicid (onset {ours['signatures'][0]}, frame {ours['signatures'][1]})"
    theirs_name = f"basic-pitch {peer['basic_pitch']} (ICASSP 2022, tflite {peer['tflite_runtime']})"
    print(f"\n{args.source} {args.split}: {len(tracks)} pieces, {minutes:.2f} min of audio, {n_ref} reference notes "
          f"({outside} outside musicid's MIDI {lo}-{hi}); mir_eval onset tolerance {cfg.onset_tolerance_s * 1000:g} ms, "
          f"offset ratio {cfg.offset_ratio:g}; mean over pieces")
    width = len(ours_name) + 3
    print(f"{'':<34}{ours_name:<{width}}{theirs_name}")
    rows = [("note onset P/R/F1", "onset"), ("note onset+offset P/R/F1", "onset_offset")]
    for label, kind in rows:
        print(f"{label:<34}{cell(ours_scores['note'][kind]):<{width}}{cell(theirs_scores['note'][kind])}")
    print(f"{'estimated notes (all pieces)':<34}{ours_scores['pooled']['estimated_notes']:<{width}}"
          f"{theirs_scores['pooled']['estimated_notes']}")
    print("musicid post-processing: " + ", ".join(f"{k} {v:g}" for k, v in ours["post_processing"].items()))
    print(f"{'s compute per audio minute (CPU)':<34}{per_min['musicid']:<{width}.2f}{per_min['basic-pitch']:.2f} "
          f"(+ {decode_per_min:.2f} decode + resample to 22.05 kHz)")
    total_s = time.perf_counter() - started
    print(f"(whole run {total_s:.0f} s; load average {load_average[0]:.2f} at the start on {os.cpu_count()} CPUs: "
          f"timings are only comparable on an otherwise idle machine)")

    def side(name: str, scores: dict[str, Any], seconds: list[float], extra: dict[str, Any]) -> dict[str, Any]:
        per_track = [{"track": t["track"], "style": track_style(t), "seconds": s, **flat_note_scores(p)}
                     for t, s, p in zip(tracks, seconds, scores["per_track"], strict=True)]
        return {"name": name, **extra, "note": scores["note"], "pooled": scores["pooled"],
                "seconds_per_audio_minute": per_min[name], "by_style": by_style(per_track), "per_track": per_track}

    ours_side = side("musicid", ours_scores, ours["seconds"], {
        "onset_model": str(args.onset), "frame_model": str(args.frame),
        "signatures": {"onset": ours["signatures"][0], "frame": ours["signatures"][1]},
        "pitch_range": ours["pitch_range"], "sample_rate": ours["sample_rate"], "load_seconds": ours["load_seconds"],
        "post_processing": ours["post_processing"], "threads": 2})
    theirs_side = side("basic-pitch", theirs_scores, [f["seconds"] for f in peer["files"]], {
        "version": peer["basic_pitch"], "tflite_runtime": peer["tflite_runtime"], "model": peer["model"],
        "post_processing": peer["defaults"], "threads": peer["threads"], "load_seconds": peer["load_seconds"],
        "warmup_seconds": peer["warmup_seconds"], "decode_resample_seconds_per_audio_minute": decode_per_min})
    print(f"\nnote onset F1 by style (pieces){'':<4}{'musicid':<10}basic-pitch")
    for style, ours_style in ours_side["by_style"].items():
        label = f"{style} ({ours_style['pieces']})"
        print(f"  {label:<32}{ours_style['onset_f1']:<10.3f}{theirs_side['by_style'][style]['onset_f1']:.3f}")

    report = {
        "labelled": str(args.labelled), "source": args.source, "split": args.split,
        "tracks": [t["track"] for t in tracks], "audio_minutes": minutes, "reference_notes": n_ref,
        "reference_notes_outside_musicid_range": outside,
        "scoring": {"onset_tolerance_s": cfg.onset_tolerance_s, "offset_ratio": cfg.offset_ratio,
                    "reference": "all notes of the MIDI labels, for both", "note": "mean over pieces"},
        "musicid": ours_side, "basic_pitch": theirs_side,
        "seconds_per_audio_minute": per_min, "run_seconds": total_s,
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": list(load_average)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
