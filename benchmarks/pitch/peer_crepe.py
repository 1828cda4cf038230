"""Runs inside .bench/crepe-venv (torchcrepe + CPU torch): pitch of each window in an npz, with timing.

    python peer_crepe.py WINDOWS.npz OUT.json [--model full|tiny]

WINDOWS.npz holds `windows` (n, samples) at `sample_rate`; each window is resampled to 16 kHz (what
CREPE takes) and its pitch read from CREPE's frame at the window's centre (weighted-argmax decoding).
"""

import argparse
import json
import time

import numpy as np
import torch
import torchcrepe
from scipy.signal import resample_poly


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
    audio = torch.from_numpy(np.stack([resample_poly(w, 160, rate // 100) for w in windows]).astype(np.float32))
    hop = 80
    freqs = []
    for start in range(0, len(audio), 64):
        batch = audio[start : start + 64]
        for row in batch:
            pitch = torchcrepe.predict(row[None], 16000, hop, 31.7, 2006.0, args.model, decoder=torchcrepe.decode.weighted_argmax,
                                       batch_size=64, device="cpu")
            freqs.append(float(pitch[0, pitch.shape[1] // 2]))
    seconds = time.perf_counter() - began
    with open(args.out, "w") as handle:
        json.dump({"frequency_hz": freqs, "seconds": seconds, "model": args.model,
                   "torchcrepe": getattr(torchcrepe, "__version__", "?"), "torch": torch.__version__}, handle)


if __name__ == "__main__":
    main()
