"""End to end: the real `dvc repro` (synth → report, MLflow registry included) in a temporary copy."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from e2e_repo import STAGES, make_repo
from e2e_repo import env_for as _env
from e2e_repo import run as _run
from e2e_repo import set_params as _set_params
from musicid.store import open_store, read_windows

pytestmark = pytest.mark.slow


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


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
    line = json.loads(_run(["musicid", "identify", str(tmp_path / "clip.wav"), "--json"], repo, env, stdout_only=True))
    assert line["query"] == str(tmp_path / "clip.wav") and line["matches"]
    assert {"ref", "score", "offset_s"} <= set(line["matches"][0])

    # the report stage wrote the release documents and registered the model (alias candidate)
    card = (repo / "reports/model-card.md").read_text()
    assert model_config["signature"] in card and "## Limitations" in card and "| **main top-1** |" in card
    checklist = (repo / "reports/release-checklist.md").read_text()
    assert "| gate `main_top1_3s` ≥ 0.9 |" in checklist and "index built with this model | pass" in checklist
    assert "× real time" in (repo / "reports/benchmark-report.md").read_text()
    versions = json.loads(_run(["musicid", "registry", "list", "--json"], repo, env, stdout_only=True))
    assert [(v["version"], v["aliases"], v["signature"]) for v in versions] == [("1", ["candidate"], model_config["signature"])]
    assert versions[0]["metrics"]["main_top1"] == metrics["main"]["top1"] and versions[0]["data_version"].endswith(".dir")
    runs = _mlflow_runs(repo)
    assert {run.data.tags["musicid.stage"] for run in runs} == {"train", "evaluate", "report"}
    train_run = next(run for run in runs if run.data.tags["musicid.stage"] == "train")
    assert train_run.data.params["train.epochs"] == "2" and train_run.data.metrics["best_val_top1"] >= 0
    assert all(run.data.tags["musicid.data_version"] == versions[0]["data_version"] for run in runs)
    assert all(run.data.tags.get("mlflow.parentRunId") == train_run.info.run_id for run in runs if run is not train_run)

    _set_params(repo, shards={"dtype": "float32"})
    status = _run(["dvc", "status"], repo, env)
    assert "shards:" in status and "prepare:" not in status and "ingest:" not in status
    # rebuild only the stale store (the rest of the chain reruns the same way, as the experiment tests show)
    assert _ran(_run(["dvc", "repro", "shards"], repo, env)) == {"shards"}
    assert open_store(repo / "data/shards/train.zarr")["waveform"].dtype == np.float32
    status = _run(["dvc", "status"], repo, env)
    assert "train:" in status and "report:" in status and "shards:" not in status and "synth:" not in status


def _mlflow_runs(repo: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("musicid")
    return client.search_runs([experiment.experiment_id])


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
