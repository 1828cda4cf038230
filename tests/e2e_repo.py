"""Helpers for end-to-end tests: a temporary git + DVC copy of this pipeline with tiny params."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

TINY_PARAMS = {
    "synth": {"seed": 3, "n_works": 4, "versions_per_work": 2, "min_duration_s": 4.0, "max_duration_s": 6.0},
    "ingest": {"query_duration_s": 2.0},
    "prepare": {"val_fraction": 0.25, "test_fraction": 0.25, "query_lengths_s": [1, 2], "queries_per_track": 1},
    "fingerprint.shards": {"window_s": 1.5, "hop_s": 0.5, "chunk_mb": 0.05, "shard_mb": 0.2},
    "fingerprint.model": {"n_mels": 32, "channels": [8, 16, 16], "hidden": 64, "embedding_dim": 16},
    "fingerprint.train": {"epochs": 2, "steps_per_epoch": 2, "batch_size": 8, "val_queries": 8, "device": "cpu"},
    "fingerprint.prod": {"folds": 2, "epochs": 1, "final_epochs": 1},
    "fingerprint.index": {"checkpoint_every_refs": 3, "device": "cpu"},
    "fingerprint.evaluate": {"conditions": ["noise", "speed"], "max_queries": 4},
    "works.features": {"train_speeds": [1.0, 1.1], "chunk_mb": 0.05, "shard_mb": 0.2, "extra_synthetic_works": 2,
                       "extra_synthetic_versions": 2, "extra_synthetic_duration_s": [3.0, 4.0]},
    "works.model": {"embedding_dim": 16, "dim": 32, "conformer_layers": 1, "conformer_heads": 2, "conformer_ffn": 32,
                    "conformer_kernel": 7, "cqtnet_channels": [8, 16]},
    "works.train": {"epochs": 2, "steps_per_epoch": 2, "works_per_batch": 2, "per_work": 2, "chunk_frames": [50, 75],
                    "eval_every": 1, "device": "cpu"},
    "works.prod": {"folds": 2, "epochs": 1, "final_epochs": 1},
    "works.index": {"device": "cpu"},
    "pitch.synth": {"n_bins": 256, "samples_per_bin": {"train": 2, "val": 1, "test": 1},
                    "polyphonic_windows": {"train": 96, "val": 32, "test": 32}, "shard_mb": 0.5, "chunk_mb": 0.1, "n_timbres": 8},
    "pitch.model": {"channels": [8, 8], "dilations": [1, 2]},
    "pitch.train": {"epochs": 2, "steps_per_epoch": 2, "batch_size": 8, "val_windows": 32, "device": "cpu"},
    "pitch.evaluate": {"probe_notes": 3},
    "pitch_notes": {"window_frames": 32},
    "pitch_notes.synthetic": {"works": {"train": 1, "val": 1, "test": 1}, "versions": 1, "max_duration_s": 6.0},
    "pitch_notes.chorales": {"pieces": 3, "renderings": {"train": 1, "val": 1, "test": 1}},
    "pitch_onset": {"channels": [4, 4, 4], "lstm_hidden": 4, "context_frames": 3, "epochs": 1, "steps_per_epoch": 2,
                    "batch_size": 2, "eval_windows": 4, "device": "cpu"},
    "pitch_frame": {"channels": [4, 4, 4], "lstm_hidden": 4, "context_frames": 3, "epochs": 1, "steps_per_epoch": 2,
                    "batch_size": 2, "eval_windows": 4, "device": "cpu"},
    "pitch_transcribe": {"device": "cpu"},
    "pitch_prod": {"folds": 2, "epochs": 1, "final_epochs": 1},
}
FINGERPRINT_STAGES = tuple(f"fingerprint-{s}" for s in ("shards", "train", "index", "evaluate", "report", "train-prod"))
WORKS_STAGES = tuple(f"works-{s}" for s in ("split", "features", "train", "index", "evaluate", "report", "train-prod"))
PITCH_STAGES = tuple(f"pitch-{s}" for s in ("synth", "notes-render", "notes-shards", "onset-train", "frame-train",
                                             "transcribe-evaluate", "transcribe-report", "train-prod", "train", "evaluate",
                                             "report"))
STAGES = ("synth", "ingest", "prepare", *FINGERPRINT_STAGES, *WORKS_STAGES, *PITCH_STAGES)


def env_for(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(DVC_NO_ANALYTICS="1", DVC_SITE_CACHE_DIR=str(tmp_path / "dvc-site-cache"))
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    # runs and models go to the default place, <repo>/mlflow.db, as for a user
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MUSICID_MODEL_URI", "DVC_ROOT", "DVC_EXP_NAME"):
        env.pop(name, None)
    return env


def run(args: list[str], cwd: Path, env: dict[str, str], stdout_only: bool = False) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout if stdout_only else done.stdout + done.stderr


def tagged_copy(template: Path, tmp_path: Path, *setup: list[str], tag: str = "v0.1") -> tuple[Path, dict[str, str]]:
    """copy_repo, checked to be as reproduced (nothing stale), then the `setup` commands (e.g. a remote),
    everything committed and tagged: a release."""
    repo, env = copy_repo(template, tmp_path), env_for(tmp_path)
    assert "up to date" in run(["dvc", "status"], repo, env)
    for command in setup:
        run(command, repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "tiny pipeline"], repo, env)
    run(["git", "tag", tag], repo, env)
    return repo, env


def run_queue(repo: Path, env: dict[str, str], jobs: int = 2, timeout_s: float = 480) -> str:
    """`dvc queue start -j JOBS` (one torch thread per worker on two cores, as `exp tune` does), then wait
    until nothing is queued or running; returns the last `dvc queue status`."""
    import time

    run(["dvc", "queue", "start", "-j", str(jobs)], repo, env | {"OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + timeout_s
    while True:
        status = run(["dvc", "queue", "status"], repo, env)
        if ("Queued" not in status and "Running" not in status) or time.monotonic() > deadline:
            return status
        time.sleep(2)


def set_params(repo: Path, sections: dict[str, dict]) -> None:
    """Update sections named by dotted path ({"fingerprint.train": {...}}) in repo/params.yaml."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in sections.items():
        node = params
        for part in section.split("."):
            node = node[part]
        node.update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_repo(tmp_path: Path) -> Path:
    """A git + DVC repository holding this project's pipeline definition with tiny params."""
    work = tmp_path / "repo"
    work.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, work / name)
    shutil.copytree(REPO / ".dvc", work / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    # the stages depend on the code they run: the copy carries it (the installed package is what runs)
    shutil.copytree(REPO / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = env_for(tmp_path)
    run(["git", "init", "-q"], work, env)
    set_params(work, TINY_PARAMS)
    return work


def copy_repo(template: Path, tmp_path: Path) -> Path:
    """A reproduced repository copied to tmp_path/repo (git, DVC cache, outputs, MLflow database), with the
    database's absolute artifact locations pointed at the copy: the copy shares nothing with the template."""
    import sqlite3

    work = tmp_path / "repo"
    shutil.copytree(template, work, symlinks=True,
                    ignore=lambda folder, names: ["tmp"] if Path(folder) == template / ".dvc" else [])
    old, new = str(template.resolve()), str(work.resolve())
    with sqlite3.connect(work / "mlflow.db") as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            columns = [row[1] for row in db.execute(f"PRAGMA table_info('{table}')")
                       if str(row[2]).upper().startswith(("VARCHAR", "TEXT"))]
            for column in columns:
                db.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) WHERE instr("{column}", ?) > 0',
                           (old, new, old))
    return work
