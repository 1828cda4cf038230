"""Runs inside .bench/basic-pitch-venv (basic-pitch + tflite-runtime): notes of each audio file, with timing.

    python peer_basic_pitch.py FILES.json OUT.json [--threads 2]

FILES.json is a JSON list of audio paths. Each file goes through `basic_pitch.inference.predict` with its
default post-processing (onset_threshold 0.5, frame_threshold 0.3, minimum_note_length 127.70 ms,
melodia_trick on, no frequency limits; the values used are read from predict's signature and written to
OUT.json) on the ICASSP 2022 model in its TFLite serialisation, run by tflite-runtime with --threads
threads (the caller caps numpy's and numba's pools with OMP_NUM_THREADS and the like). The model is
loaded once and timed apart; one untimed warm-up run on the first file comes first. Decoding and
resampling to 22.05 kHz (librosa.load, as basic-pitch reads audio) are timed apart too: each file is
decoded before its timed run and predict is handed the decoded audio, so `seconds` is the model and
note creation alone. OUT.json: per file its notes [onset_s, offset_s, MIDI pitch, velocity 0..1] (the
velocity is basic-pitch's note amplitude), `seconds`, `decode_seconds`, `audio_s`.
"""

import argparse
import contextlib
import inspect
import io
import json
import logging
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

DEFAULTS = ("onset_threshold", "frame_threshold", "minimum_note_length", "minimum_frequency", "maximum_frequency",
            "multiple_pitch_bends", "melodia_trick")


def load_model(path: str, threads: int):  # -> basic_pitch.inference.Model
    """basic-pitch's Model on the .tflite file, its interpreter rebuilt with `threads` threads."""
    import tflite_runtime.interpreter as tflite
    from basic_pitch import inference

    model = inference.Model(path)
    if model.model_type != inference.Model.MODEL_TYPES.TFLITE:
        raise SystemExit(f"{path}: loaded as {model.model_type}, expected TFLite")
    model.interpreter = tflite.Interpreter(path, num_threads=threads)
    model.model = model.interpreter.get_signature_runner()
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    paths = [str(p) for p in json.loads(Path(args.files).read_text())]
    logging.basicConfig(level=logging.ERROR)  # basic-pitch warns at import about every backend it does not find
    import librosa
    from basic_pitch import FilenameSuffix, build_icassp_2022_model_path, inference
    from basic_pitch.constants import AUDIO_SAMPLE_RATE

    decoded: dict = {}
    real_load = librosa.load

    def cached_load(path, *a, sr=22050, mono=True, **kw):  # the file this run decoded already, else a real load
        if str(path) in decoded and sr == AUDIO_SAMPLE_RATE and mono and not a and not kw:
            return decoded[str(path)], sr
        return real_load(path, *a, sr=sr, mono=mono, **kw)

    librosa.load = cached_load
    model_path = str(build_icassp_2022_model_path(FilenameSuffix.tflite))
    began = time.perf_counter()
    model = load_model(model_path, args.threads)
    load_s = time.perf_counter() - began
    defaults = {k: v.default for k, v in inspect.signature(inference.predict).parameters.items() if k in DEFAULTS}

    def predict(path: str) -> list:
        with contextlib.redirect_stdout(io.StringIO()):  # predict prints a line per file
            _, _, events = inference.predict(path, model)
        events = sorted(events, key=lambda e: (e[0], e[2]))
        return [[float(on), float(off), int(pitch), float(amp)] for on, off, pitch, amp, _ in events]

    warm_s = 0.0
    if paths:
        began = time.perf_counter()
        predict(paths[0])
        warm_s = time.perf_counter() - began
    files = []
    for path in paths:
        began = time.perf_counter()
        audio, _ = real_load(path, sr=AUDIO_SAMPLE_RATE, mono=True)
        decode_s = time.perf_counter() - began
        decoded[path] = audio
        began = time.perf_counter()
        notes = predict(path)
        seconds = time.perf_counter() - began
        del decoded[path]
        files.append({"path": path, "notes": notes, "seconds": seconds, "decode_seconds": decode_s,
                      "audio_s": len(audio) / AUDIO_SAMPLE_RATE})
        print(f"basic-pitch: {os.path.basename(path)}: {len(notes)} notes, {seconds:.2f} s", file=sys.stderr)
    with open(args.out, "w") as handle:
        json.dump({"basic_pitch": version("basic-pitch"), "tflite_runtime": version("tflite-runtime"),
                   "model": "ICASSP 2022 (" + os.path.relpath(model_path, os.path.dirname(inference.__file__)) + ")",
                   "threads": args.threads, "defaults": defaults, "load_seconds": load_s, "warmup_seconds": warm_s,
                   "files": files}, handle)


if __name__ == "__main__":
    main()
