"""End to end: the real `dvc repro` through `shards` in a temporary copy of the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from musicid.store import open_store, read_windows

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY_PARAMS = {
    "synth": {"seed": 3, "n_works": 4, "versions_per_work": 2, "min_duration_s": 4.0, "max_duration_s": 6.0},
    "ingest": {"query_duration_s": 2.0},
    "prepare": {"val_fraction": 0.25, "test_fraction": 0.25, "query_lengths_s": [1, 2], "queries_per_track": 1},
    "shards": {"window_s": 1.5, "hop_s": 0.5, "chunk_mb": 0.05, "shard_mb": 0.2},
    "model": {"n_mels": 32, "channels": [8, 16, 16], "hidden": 64, "embedding_dim": 16},
    "train": {"epochs": 2, "steps_per_epoch": 2, "batch_size": 8, "val_queries": 8, "device": "cpu"},
    "index": {"checkpoint_every_refs": 3, "device": "cpu"},
    "evaluate": {"conditions": ["noise", "speed"], "max_queries": 4},
}
STAGES = ("synth", "ingest", "prepare", "shards", "train", "index", "evaluate")


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(DVC_NO_ANALYTICS="1", DVC_SITE_CACHE_DIR=str(tmp_path / "dvc-site-cache"))
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _set_params(repo: Path, **sections: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git + DVC repository holding this project's pipeline definition with tiny params."""
    work = tmp_path / "repo"
    work.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(REPO / name, work / name)
    shutil.copytree(REPO / ".dvc", work / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    env = _env(tmp_path)
    _run(["git", "init", "-q"], work, env)
    _set_params(work, **TINY_PARAMS)
    return work


def _ran(output: str) -> set[str]:
    return {stage for stage in STAGES if f"Running stage '{stage}'" in output}


def test_full_repro_then_only_changed_stages_rerun(repo: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert _ran(_run(["dvc", "repro"], repo, env)) == set(STAGES)
    assert "up to date" in _run(["dvc", "status"], repo, env)

    catalog = json.loads((repo / "data/ingested/catalog.json").read_text())["tracks"]
    assert len(catalog) == 8 and {t["work_id"] for t in catalog} == {f"w{w:04d}" for w in range(4)}
    report = json.loads((repo / "reports/ingest/inspect.json").read_text())
    assert report["readiness"]["ready_for_smoke"] is True
    assert _run(["musicid", "data", "validate", "data/manifests"], repo, env).startswith("ok")

    split_tracks = {}
    for split in ("train", "val", "test"):
        group = open_store(repo / f"data/shards/{split}.zarr")
        assert group.attrs["sample_rate"] == 8000 and group.attrs["window_samples"] == 12000
        split_tracks[split] = set(group.attrs["track_ids"])
        rows = group["waveform"].shape[0]
        # each 4-6 s track gives (duration - 1.5) / 0.5 + 1 windows of 1.5 s at hop 0.5 s
        assert 6 * len(split_tracks[split]) <= rows <= 10 * len(split_tracks[split])
        waveform = read_windows(repo / f"data/shards/{split}.zarr", np.arange(rows))
        assert np.abs(waveform).max() > 0.05  # real audio, not zeros
    assert not (split_tracks["train"] & split_tracks["test"])

    metrics = json.loads((repo / "reports/eval/metrics.json").read_text())
    assert metrics["queries"] == 4 * 2 and set(metrics["by_condition"]) == {"noise", "speed"}
    assert 0.0 <= metrics["main"]["top1"] <= 1.0 and metrics["latency_ms"]["p95"] > 0
    model_config = json.loads((repo / "models/fingerprinter/config.json").read_text())
    assert json.loads((repo / "data/index/meta.json").read_text())["model_signature"] == model_config["signature"]
    assert (repo / "reports/eval/hit_rate.png").stat().st_size > 0
    plots = _run(["dvc", "plots", "show", "--json"], repo, env)
    assert "Hit rate vs query length" in plots and "main_top1" in plots and "val_top1" in plots

    # identify a clip cut from an indexed synthetic track, through the CLI contract
    import soundfile as sf

    ref = json.loads((repo / "data/manifests/refs.jsonl").read_text().splitlines()[0])
    audio, rate = sf.read(repo / "data/ingested" / ref["path"])
    sf.write(tmp_path / "clip.wav", audio[int(1.0 * rate) : int(3.5 * rate)], rate)
    line = json.loads(_run(["musicid", "identify", str(tmp_path / "clip.wav"), "--json"], repo, env).strip().splitlines()[-1])
    assert line["query"] == str(tmp_path / "clip.wav") and line["matches"]
    assert {"ref", "score", "offset_s"} <= set(line["matches"][0])

    _set_params(repo, shards={"dtype": "float32"})
    status = _run(["dvc", "status"], repo, env)
    assert "shards:" in status and "prepare:" not in status and "ingest:" not in status
    assert _ran(_run(["dvc", "repro"], repo, env)) == {"shards", "train", "index", "evaluate"}
    assert open_store(repo / "data/shards/train.zarr")["waveform"].dtype == np.float32
    assert "up to date" in _run(["dvc", "status"], repo, env)


def test_folder_source_with_a_corrupt_file_quarantines_it_and_succeeds(repo: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    _run(["dvc", "repro", "synth"], repo, env)
    music = repo / "music"
    with tarfile.open(repo / "data/raw/synthetic.tar.gz") as tar:
        tar.extractall(music, filter="data")
    victim = sorted((music / "audio").rglob("*.flac"))[0]
    victim.write_bytes(victim.read_bytes()[:100] + b"\0" * 5000)
    _set_params(repo, ingest={"source": "music"})

    _run(["dvc", "repro", "shards"], repo, env)
    quarantine = json.loads((repo / "data/ingested/quarantine.json").read_text())["files"]
    assert [(q["source_path"], q["reason"]) for q in quarantine] == [
        (victim.relative_to(music).as_posix(), "undecodable")
    ]
    assert len(json.loads((repo / "data/ingested/catalog.json").read_text())["tracks"]) == 7
    assert (repo / "data/shards/train.zarr").is_dir()
