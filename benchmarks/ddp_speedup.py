"""DDP speed-up: each training stage as 1 process and as N DDP processes (train.world_size), same params.

Runs `musicid stage <name>` in a scratch workspace whose `data/` is this repository's (read only: run
`dvc repro` or `make demo` first), with the repository's params but `epochs: 1`, `--steps` steps and
tracking off, so it measures the training loop at the real model and batch sizes. Prints, per stage and
world size: the stage's wall time, the epoch's time (steps + validation on rank 0), steps per second,
and the speed-up over one process. One process uses every core through torch's intra-op threads;
N processes get cores / N threads each (as `musicid stage` sets OMP_NUM_THREADS).

    .venv/bin/python benchmarks/ddp_speedup.py                              # 4 stages, 1 vs 2 processes
    .venv/bin/python benchmarks/ddp_speedup.py --stages pitch-train --steps 40 --world-sizes 1 2 4
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SECTION = {"fingerprint-train": ("fingerprint", "train"), "works-train": ("works", "train"),
           "pitch-train": ("pitch", "train"), "pitch-onset-train": ("pitch_onset",)}
# validation runs on rank 0 alone, the same for any number of processes: kept small to time the steps
SMALL_VALIDATION = {"fingerprint-train": {"val_queries": 8}, "works-train": {"eval_every": 1000},
                    "pitch-train": {"val_windows": 8}, "pitch-onset-train": {"eval_windows": 8}}
HISTORY = {"fingerprint-train": "fingerprint/train", "works-train": "works/train", "pitch-train": "pitch/train",
           "pitch-onset-train": "pitch/onset-train"}


def workspace(scratch: Path) -> Path:
    work = scratch / "work"
    work.mkdir()
    (work / "data").symlink_to(REPO / "data")
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    return work


def run_stage(work: Path, stage: str, world_size: int, steps: int) -> dict[str, float]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    section = params
    for key in SECTION[stage]:
        section = section[key]
    section.update(epochs=1, steps_per_epoch=steps, device="cpu", **SMALL_VALIDATION[stage])
    params["train"]["world_size"] = world_size
    params["tracking"]["enabled"] = False
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.rmtree(work / ".musicid", ignore_errors=True)  # no checkpoint to resume from
    env = dict(os.environ)
    env.pop("WORLD_SIZE", None)
    began = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "musicid"), "stage", stage], cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(f"{stage} with {world_size} process(es) failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    with (work / "reports" / HISTORY[stage] / "history.csv").open() as handle:
        epoch_s = float(list(csv.DictReader(handle))[0]["seconds"])
    return {"wall_s": wall, "epoch_s": epoch_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", nargs="+", default=list(SECTION), choices=list(SECTION))
    parser.add_argument("--world-sizes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=30, help="training steps (one epoch) per run")
    args = parser.parse_args()
    if not (REPO / "data" / "shards").is_dir():
        raise SystemExit("no data/shards here: run `make demo` (or dvc repro) first")
    print(f"{os.cpu_count()} cores; {args.steps} steps per run; OMP_NUM_THREADS per process = cores / processes")
    print(f"{'stage':<20} {'procs':>5} {'wall s':>8} {'epoch s':>8} {'steps/s':>8} {'speed-up':>9}")
    with tempfile.TemporaryDirectory(prefix="ddp-speedup-") as scratch:
        work = workspace(Path(scratch))
        for stage in args.stages:
            base = None
            for world_size in args.world_sizes:
                row = run_stage(work, stage, world_size, args.steps)
                base = base or row["epoch_s"]
                print(f"{stage:<20} {world_size:>5} {row['wall_s']:>8.1f} {row['epoch_s']:>8.1f} "
                      f"{args.steps / row['epoch_s']:>8.2f} {base / row['epoch_s']:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
