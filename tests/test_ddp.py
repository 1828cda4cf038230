"""DDP training (training/distributed.py), for real: every family's training stage as 2 gloo processes on
CPU, started by `musicid stage` itself (train.world_size: 2) or by the user's torchrun, checked against the
single-process run of the same params.

Stated tolerances: the fingerprinter (GroupNorm, contrastive negatives gathered from both ranks) and the pitch
model (no normalisation layer) train the single-process model up to float summation order: weights within
1e-5, per-epoch losses within 1e-5 relative. The works encoder and the onset network have BatchNorm, whose
batch statistics are per rank on CPU (SyncBatchNorm needs CUDA): their 2-process run must finish every epoch,
write a model that loads and passes its self-check, and select by a validation figure within 0.25 of the
single-process one.
"""

from __future__ import annotations

import csv
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from e2e_repo import copy_repo, env_for, run, set_params

pytestmark = [pytest.mark.slow, pytest.mark.team]

FAMILY_OF = {"fingerprint-train": "fingerprint", "works-train": "works", "pitch-train": "pitch",
             "pitch-onset-train": "pitch-onset"}
SELECTS = {"works-train": "val_mAP", "pitch-onset-train": "eval_f1"}


@pytest.fixture(scope="module")
def workspace(tiny_pipeline: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("ddp")
    repo = copy_repo(tiny_pipeline["repo"], tmp)
    # two sets × 2 rows per step: 2 processes need an even share of each set's rows
    set_params(repo, {"pitch_onset": {"batch_size": 4}})
    return repo, env_for(tmp)


def history(repo: Path, stage: str) -> list[dict[str, str]]:
    folder = "pitch/onset-train" if stage == "pitch-onset-train" else f"{FAMILY_OF[stage]}/train"
    with (repo / "reports" / folder / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


def weights(repo: Path, stage: str) -> dict[str, torch.Tensor]:
    return torch.load(repo / "models" / FAMILY_OF[stage] / "model.pt", map_location="cpu", weights_only=True)


def train(repo: Path, env: dict[str, str], stage: str, world_size: int, torchrun: bool = False) -> str:
    set_params(repo, {"train": {"world_size": 1 if torchrun else world_size}})
    command = ["musicid", "stage", stage]
    if torchrun:
        command = ["torchrun", "--standalone", "--nproc-per-node", str(world_size), "-m", "musicid.cli", *command[1:]]
    return run(command, repo, env | {"OMP_NUM_THREADS": "1"})


def single_then_ddp(repo: Path, env: dict[str, str], stage: str, torchrun: bool = False):
    train(repo, env, stage, 1)
    one = weights(repo, stage), history(repo, stage)
    out = train(repo, env, stage, 2, torchrun=torchrun)
    return one, (weights(repo, stage), history(repo, stage)), out


@pytest.mark.parametrize("stage,torchrun", [("fingerprint-train", False), ("pitch-train", True)])
def test_two_processes_train_the_single_process_model(workspace, stage: str, torchrun: bool) -> None:
    repo, env = workspace
    (w1, h1), (w2, h2), out = single_then_ddp(repo, env, stage, torchrun=torchrun)
    assert torchrun or f"{stage}: 2 processes (DDP, gloo)" in out
    assert out.count("finished in") == 1 and "Traceback" not in out  # rank 0 (or the launcher) reports
    assert w1.keys() == w2.keys()
    assert max(float((w1[k].float() - w2[k].float()).abs().max()) for k in w1) < 1e-5
    assert len(h1) == len(h2) > 0
    for one, two in zip(h1, h2):
        for key in ("train_loss", "val_loss"):
            assert float(two[key]) == pytest.approx(float(one[key]), rel=1e-5), (key, one, two)


@pytest.mark.parametrize("stage", ["works-train", "pitch-onset-train"])
def test_batchnorm_families_train_under_ddp(workspace, stage: str) -> None:
    from musicid.families import load_model
    from musicid.families.pitch.transcribe import load_notenet

    repo, env = workspace
    (_, h1), (_, h2), out = single_then_ddp(repo, env, stage)
    assert len(h2) == len(h1) > 0 and "Traceback" not in out
    best = lambda rows: max(float(r[SELECTS[stage]]) for r in rows)  # noqa: E731
    assert abs(best(h2) - best(h1)) <= 0.25
    model = repo / "models" / FAMILY_OF[stage]  # the loaders check the signature and self-check a forward pass
    load_notenet(model, "onset", torch.device("cpu")) if stage == "pitch-onset-train" else load_model(model, "cpu")


def test_an_interrupted_ddp_run_resumes_to_the_uninterrupted_weights(workspace) -> None:
    repo, env = workspace
    set_params(repo, {"pitch.train": {"epochs": 6, "steps_per_epoch": 6, "patience": 10}})
    try:
        train(repo, env, "pitch-train", 2)
        uninterrupted = weights(repo, "pitch-train")
        shutil.rmtree(repo / ".musicid" / "checkpoints", ignore_errors=True)
        stage = subprocess.Popen(["musicid", "stage", "pitch-train"], cwd=repo, env=env | {"OMP_NUM_THREADS": "1"},
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert stage.stdout is not None
        for line in stage.stdout:  # stop it once epoch 2's checkpoint is written
            if "pitch-train: epoch 2:" in line:
                time.sleep(0.3)
                stage.send_signal(signal.SIGTERM)
                break
        rest = stage.communicate(timeout=60)[0]
        assert stage.returncode == 143, rest
        assert rest.count("stopped by SIGTERM") == 1  # one line, from the launcher; no rank is left running
        assert subprocess.run(["pgrep", "-f", "musicid.cli stage pitch-train"], capture_output=True).returncode == 1
        out = train(repo, env, "pitch-train", 2)
        assert "pitch-train: resuming from epoch" in out
        resumed = weights(repo, "pitch-train")
        assert max(float((uninterrupted[k] - resumed[k]).abs().max()) for k in resumed) < 1e-6
    finally:
        set_params(repo, {"pitch.train": {"epochs": 2, "steps_per_epoch": 2, "patience": 4}})


def test_a_world_size_that_does_not_split_the_batch_is_one_line_naming_the_keys(workspace) -> None:
    repo, env = workspace
    set_params(repo, {"train": {"world_size": 3}})
    try:
        done = subprocess.run(["musicid", "stage", "fingerprint-train"], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=120)
    finally:
        set_params(repo, {"train": {"world_size": 1}})
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == ["error: fingerprint.train.batch_size is 8 per step, which 3 processes (train.world_size / "
                     "torchrun --nproc-per-node) cannot split evenly; make it a multiple of 3"], done.stderr
    assert "processes (DDP" not in done.stdout  # refused before any process started
