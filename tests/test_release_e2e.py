"""Pinned models and experiments, end to end on tiny params: DVC remote round trip, `dvc exp run`, queued experiments.

One reproduced and committed repository is shared by the tests of this module (in file order).
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
import soundfile as sf

from e2e_repo import run, run_queue, tagged_copy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def released(tiny_pipeline: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`dvc repro` on tiny params (the session's, copied), an absolute local remote, everything committed and tagged v0.1."""
    tmp = tmp_path_factory.mktemp("release")
    repo, env = tagged_copy(tiny_pipeline["repo"], tmp, ["dvc", "remote", "modify", "local", "url", str(tmp / "remote")])
    ref = json.loads((repo / "data/manifests/refs.jsonl").read_text().splitlines()[0])
    audio, rate = sf.read(repo / "data/ingested" / ref["path"])
    sf.write(tmp / "clip.wav", audio[int(1.0 * rate) : int(3.5 * rate)], rate)
    performance = json.loads((repo / "data/splits/works/test.jsonl").read_text().splitlines()[0])
    return {"tmp": tmp, "repo": repo, "env": env, "clip": tmp / "clip.wav", "ref": ref["track_id"],
            "performance": repo / "data/ingested" / performance["path"]}


def _signature(model_dir: Path) -> str:
    return json.loads((model_dir / "config.json").read_text())["signature"]


def _runs_by_exp(repo: Path, experiment: str = "musicid-fingerprint") -> dict[str, list]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    grouped: dict[str, list] = {}
    for found in runs:
        grouped.setdefault(found.data.tags.get("musicid.dvc_exp", ""), []).append(found)
    return grouped


def test_pinned_model_push_clone_pull_identify(released: dict) -> None:
    tmp, repo, env = released["tmp"], released["repo"], released["env"]
    assert "pushed" in run(["dvc", "push"], repo, env)
    clone = tmp / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp, env)
    assert not (clone / "models/fingerprint").exists()
    run(["dvc", "pull", "models/fingerprint", "data/index/fingerprint", "models/works", "data/index/works"], clone, env)
    assert _signature(clone / "models/fingerprint") == _signature(repo / "models/fingerprint")
    answer = json.loads(run(["musicid", "identify", str(released["clip"]), "--model", "models/fingerprint",
                             "--index", "data/index/fingerprint", "--json"], clone, env, stdout_only=True))
    assert answer["matches"] and {"ref", "score", "offset_s"} <= set(answer["matches"][0])
    # a release tag pins the model for anyone: dvc get from the repository at that tag
    run(["dvc", "get", str(repo), "models/fingerprint", "--rev", "v0.1", "-o", str(tmp / "got")], tmp, env)
    assert _signature(tmp / "got") == _signature(repo / "models/fingerprint")
    # the pulled work identifier answers too, from its folder and its index
    works = json.loads(run(["musicid", "works", "identify", str(released["performance"]), "--model", "models/works",
                            "--index", "data/index/works", "--json"], clone, env, stdout_only=True))
    assert works["works"] and {"work_id", "score", "performances"} <= set(works["works"][0])


def test_experiment_with_set_param_is_tracked(released: dict) -> None:
    repo, env = released["repo"], released["env"]
    out = run(["dvc", "exp", "run", "-S", "fingerprint.train.epochs=3", "-n", "three-epochs"], repo, env)
    assert "Running stage 'fingerprint-train'" in out and "Running stage 'synth'" not in out
    assert "Running stage 'works-train'" not in out  # the other family is untouched
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env, stdout_only=True))
    text = json.dumps(shown)
    assert "three-epochs" in text and "main" in text and "epochs_run" in text
    runs = _runs_by_exp(repo)["three-epochs"]
    train = next(r for r in runs if r.data.tags["musicid.stage"] == "fingerprint-train")
    assert train.data.params["train.epochs"] == "3"
    assert {r.data.tags["musicid.stage"] for r in runs} == {"fingerprint-train", "fingerprint-evaluate", "fingerprint-report",
                                                                   "fingerprint-train-prod"}
    run(["git", "checkout", "-q", "--", "params.yaml"], repo, env)  # leave the workspace at the baseline


def test_a_queued_sweep_lands_in_the_repository_db_and_in_the_transcription_records(released: dict) -> None:
    """`dvc exp run --queue -S 'pitch_onset.pos_weight=1,2,4' pitch-transcribe-report`: three experiments,
    each retraining only the onset network and re-scoring (production training left out: not a target); every run in the repository's DB, and `musicid pitch records` lists all three."""
    repo, env = released["repo"], released["env"]
    run(["dvc", "exp", "run", "--queue", "-S", "pitch_onset.pos_weight=1,2,4", "pitch-transcribe-report"], repo, env)
    status = run_queue(repo, env)  # two at once (SQLite serialises their writes)
    assert status.count("Success") == 3, status
    runs = _runs_by_exp(repo, "musicid-pitch")
    queued = {name: found for name, found in runs.items() if name}
    stages = {name: {r.data.tags["musicid.stage"] for r in found} for name, found in queued.items()}
    assert len(queued) == 3 and all(s == {"pitch-onset-train", "pitch-transcribe-evaluate", "pitch-transcribe-report"}
                                    for s in stages.values()), stages
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db"))  # nothing went to a throwaway DB
    records = run(["musicid", "pitch", "records"], repo, env)
    rows = list(csv.DictReader(open(repo / "reports/pitch/records.csv")))
    assert {r["run"] for r in rows} >= set(queued) and "4 runs" in records  # the baseline's run and the sweep's three
    assert {r["onset pos_weight"] for r in rows if r["run"] in queued} == {"1.0", "2.0", "4.0"}


def test_a_tuning_grid_runs_as_queued_experiments_and_its_summary_reads_them_back(released: dict) -> None:
    """`musicid exp tune` on a 2 × 2 grid of works.train params × 2 seeds: 8 named DVC experiments run by two
    queue workers, every works-train run tagged with its point and seed; `exp summary` prints 4 points × 2 seeds."""
    repo, env = released["repo"], released["env"]
    (repo / "grid.yaml").write_text("name: margin-lr\nparams:\n  works.train.triplet_margin: [0.2, 0.4]\n"
                                    "  works.train.lr: [0.001, 0.004]\n")
    out = run(["musicid", "exp", "tune", "grid.yaml", "--seeds", "0,1", "-j", "2", "--stage", "works-train"], repo, env)
    assert "8 of 8 experiments succeeded" in out, out
    record = json.loads((repo / "reports/tune/margin-lr/grid.json").read_text())
    assert [e["status"] for e in record["experiments"]] == ["Success"] * 8
    assert all(e["runs_tagged"] >= 1 for e in record["experiments"])
    runs = [r for name, found in _runs_by_exp(repo, "musicid-works").items() if name.startswith("margin-lr-") for r in found]
    train = [r for r in runs if r.data.tags["musicid.stage"] == "works-train"]
    assert len(train) == 8 and {r.data.tags["musicid.tune.seed"] for r in train} == {"0", "1"}
    assert {(r.data.params["train.triplet_margin"], r.data.params["train.lr"], r.data.params["train.seed"]) for r in train} == {
        (m, lr, s) for m in ("0.2", "0.4") for lr in ("0.001", "0.004") for s in ("0", "1")}
    summary = run(["musicid", "exp", "summary", "--metric", "val_mAP", "--metric", "val_loss"], repo, env)
    assert "sweep margin-lr: 4 grid point(s)" in summary, summary
    rows = list(csv.DictReader(open(repo / "reports/tune/margin-lr/summary.csv")))
    assert len(rows) == 4 and {r["seeds"] for r in rows} == {"2"} and all(r["reading"] for r in rows)
    assert (repo / "reports/tune/margin-lr/works-train-val_mAP.png").stat().st_size > 0
    again = subprocess.run(["musicid", "exp", "tune", "grid.yaml", "--seeds", "0"], cwd=repo, env=env,
                           capture_output=True, text=True)
    assert again.returncode == 2 and "experiment names already in use: margin-lr-p0-s0" in again.stderr
