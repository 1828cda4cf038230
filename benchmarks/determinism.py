"""What `train.deterministic: true` costs, and whether runs repeat with and without it.

Trains the work identifier (the workspace's feature stores, params.yaml's works.* sections, fewer
epochs) and the fingerprinter (its shard stores) twice per setting in temporary folders and prints,
per family and setting: seconds per run and whether the two runs' model signatures (a hash of the
saved weights) are equal. Run after `dvc repro works-features fingerprint-shards`:

    PYTHONPATH=src python benchmarks/determinism.py                 # 3 epochs each, cpu
    PYTHONPATH=src python benchmarks/determinism.py --epochs 5 --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from musicid.config import load_params
from musicid.layout import family_layout


def train_once(family: str, params, deterministic: bool, epochs: int, device: str, out: Path) -> tuple[float, str]:
    began = time.perf_counter()
    if family == "works":
        from musicid.families.works.train import train_works

        cfg = params.works.train.model_copy(update={"epochs": epochs, "device": device, "patience": epochs})
        result = train_works(family_layout("works").shards, params.works.model, cfg, params.works.evaluate, out / "model",
                             out / "report", out / "ckpt", progress=False, deterministic=deterministic)
    else:
        from musicid.families.fingerprint.train import train_fingerprinter

        shards = family_layout("fingerprint").shards
        cfg = params.fingerprint.train.model_copy(update={"epochs": epochs, "device": device, "patience": epochs})
        result = train_fingerprinter(shards / "train.zarr", shards / "val.zarr", params.fingerprint.model, cfg,
                                     out / "model", out / "report", out / "ckpt", progress=False,
                                     deterministic=deterministic)
    torch.use_deterministic_algorithms(False)
    return time.perf_counter() - began, result.signature


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--families", default="works,fingerprint")
    args = parser.parse_args()
    params = load_params()
    print(f"{'family':<12}{'deterministic':>14}{'run 1 s':>10}{'run 2 s':>10}  same weights")
    for family in args.families.split(","):
        for deterministic in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                (t1, s1), (t2, s2) = (train_once(family, params, deterministic, args.epochs, args.device, Path(tmp) / str(i))
                                      for i in (1, 2))
            print(f"{family:<12}{str(deterministic).lower():>14}{t1:>10.1f}{t2:>10.1f}  {s1 == s2} ({s1[:8]} / {s2[:8]})",
                  flush=True)


if __name__ == "__main__":
    main()
