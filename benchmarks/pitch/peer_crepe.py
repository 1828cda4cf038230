"""Runs inside .bench/crepe-venv (torchcrepe): pitch of each window in an npz, with timing.

    python peer_crepe.py WINDOWS.npz OUT.json [--model full|tiny]

WINDOWS.npz holds `windows` (n, samples) at `sample_rate`. Each window is resampled to 16 kHz (what
CREPE takes); the 1024-sample CREPE frame at its centre is normalised as torchcrepe.preprocess does
(zero mean, unit deviation) and all frames go through torchcrepe.infer in batches, decoded with
weighted argmax: one CREPE frame per window, as musicid answers one window with one prediction.
"""

import argparse
import json
import time

import numpy as np
import torch
import torchcrepe
from scipy.signal import resample_poly

FRAME = 1024  # CREPE's window at 16 kHz


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("windows")
    ap.add_argument("out")
    ap.add_argument("--model", default="full")
    args = ap.parse_args()
    data = np.load(args.windows)
    windows, rate = data["windows"], int(data["sample_rate"])
    torch.set_num_threads(2)
    began = time.perf_counter()
    audio = np.stack([resample_poly(w.astype(np.float64), 160, rate // 100) for w in windows])
    centre = audio.shape[1] // 2
    frames = torch.from_numpy(audio[:, centre - FRAME // 2 : centre + FRAME // 2].astype(np.float32))
    frames = frames - frames.mean(dim=1, keepdim=True)
    frames = frames / torch.clamp(frames.std(dim=1, keepdim=True), min=1e-10)
    freqs = []
    with torch.no_grad():
        for start in range(0, len(frames), 256):
            probabilities = torchcrepe.infer(frames[start : start + 256], model=args.model)
            pitch = torchcrepe.postprocess(probabilities.reshape(1, -1, 360).transpose(1, 2), 31.7, 2006.0,
                                           torchcrepe.decode.weighted_argmax)
            freqs += pitch.reshape(-1).tolist()
    seconds = time.perf_counter() - began
    with open(args.out, "w") as handle:
        json.dump({"frequency_hz": freqs, "seconds": seconds, "model": args.model, "torch": torch.__version__}, handle)


if __name__ == "__main__":
    main()
