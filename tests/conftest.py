"""Shared fixtures: small audio folders built on the fly (no network, no shared/ data)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real `dvc repro` of the whole pipeline on tiny params (tests/e2e_repo.py), made once per session;
    end-to-end modules work on their own copy of it (e2e_repo.copy_repo), never on this one."""
    from e2e_repo import env_for, make_repo, run

    tmp = tmp_path_factory.mktemp("tiny-pipeline")
    repo = make_repo(tmp)
    return {"repo": repo, "output": run(["dvc", "repro"], repo, env_for(tmp))}


@pytest.fixture(autouse=True, scope="session")
def _faiss_single_thread():
    """Tiny k-means and searches are all OpenMP overhead; on a busy 2-core box 2 threads spin for seconds."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def tone(duration_s: float, sample_rate: int = 22050, freq: float = 220.0, seed: int = 0) -> np.ndarray:
    """A decaying harmonic note train with a little noise: not silent, not constant."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * sample_rate)) / sample_rate
    envelope = np.exp(-3.0 * (t % 0.5))
    signal = sum(np.sin(2 * np.pi * freq * k * t) / k for k in (1, 2, 3))
    return (0.3 * envelope * signal + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def write_audio(path: Path, duration_s: float, sample_rate: int = 22050, seed: int = 0, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(duration_s, sample_rate, 110.0 * (1 + seed % 5), seed), sample_rate, **kwargs)
    return path


@pytest.fixture
def audio_folder(tmp_path: Path) -> Path:
    """Six good files across three works plus one file of each bad kind."""
    root = tmp_path / "music"
    for work in range(3):
        for version in range(2):
            ext = ["wav", "flac"][version]
            write_audio(root / f"w{work}" / f"w{work}_v{version}.{ext}", 4.0 + work, seed=work * 10 + version)
    (root / "metadata.csv").write_text(
        "file,track_id,work_id,version,title,style\n"
        + "".join(
            f"w{w}/w{w}_v{v}.{['wav', 'flac'][v]},w{w}_v{v},w{w},{v},Song {w},test\n" for w in range(3) for v in range(2)
        )
    )
    (root / "bad").mkdir()
    (root / "bad" / "empty.wav").write_bytes(b"")
    (root / "bad" / "not_audio.mp3").write_text("this is a text file with an audio extension\n")
    sf.write(root / "bad" / "silent.wav", np.zeros(22050 * 3, dtype=np.float32), 22050)
    write_audio(root / "bad" / "short.wav", 0.3)
    good = write_audio(tmp_path / "whole.wav", 3.0).read_bytes()
    (root / "bad" / "truncated.wav").write_bytes(good[: len(good) // 2])
    flac = write_audio(tmp_path / "whole.flac", 3.0, seed=3).read_bytes()
    (root / "bad" / "corrupt.flac").write_bytes(flac[:200] + bytes(len(flac) - 200))
    (root / "notes.txt").write_text("not audio, ignored\n")
    return root


BAD_FILES = {
    "bad/empty.wav": "empty_file",
    "bad/not_audio.mp3": "undecodable",
    "bad/silent.wav": "silent",
    "bad/short.wav": "too_short",
    "bad/truncated.wav": "truncated",
    "bad/corrupt.flac": "undecodable",
}


@pytest.fixture(scope="session")
def _mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated MLflow SQLite DB per session (the first migration costs seconds); tests copy it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    previous = mlflow.get_tracking_uri()
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    mlflow.set_tracking_uri(previous)
    return path


@pytest.fixture
def mlflow_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _mlflow_template_db: Path) -> Iterator[Path]:
    """A private tracking DB for this test, named by MLFLOW_TRACKING_URI (as users would)."""
    import shutil

    path = tmp_path / "tracking" / "mlflow.db"
    path.parent.mkdir()
    shutil.copy(_mlflow_template_db, path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{path}")  # mlflow.set_registry_uri exports it: undone after
    for name in ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "MUSICID_MODEL_URI"):
        monkeypatch.delenv(name, raising=False)
    yield path
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils

    mlflow.set_tracking_uri(None)  # the next test starts from MLflow's defaults, not this test's deleted DB
    registry_utils._registry_uri = None
