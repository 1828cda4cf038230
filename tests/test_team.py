"""Team set-up, for real: PostgreSQL and `mlflow server` started by `musicid team up`, the tiny pipeline's
stages, the registry, `identify` from models:/...@champion, `mlflow models serve` and a two-worker DVC queue
all going through the server; a server that goes away mid-stage ends the stage with one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import soundfile as sf

from e2e_repo import copy_repo, env_for, run, run_queue, set_params
from musicid.tracking.pyfunc_io import encode_audio
from musicid.team import TeamState, down, free_port, server_healthy, up

pytestmark = [pytest.mark.slow, pytest.mark.team]

FINGERPRINT_STAGES = ["fingerprint-train", "fingerprint-index", "fingerprint-evaluate", "fingerprint-report"]


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamState]:
    """`musicid team up` in a temporary folder on free ports; everything purged afterwards."""
    folder = tmp_path_factory.mktemp("team")
    done = subprocess.run(["musicid", "team", "up", "--dir", str(folder), "--pg-port", str(free_port()),
                           "--port", str(free_port()), "--json"], capture_output=True, text=True, timeout=300,
                          env=env_for(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    state = TeamState(**json.loads((folder / "team.json").read_text()))
    assert json.loads(done.stdout)["tracking_uri"] == state.tracking_uri and server_healthy(state.tracking_uri)
    yield state
    down(folder, purge=True)


@pytest.fixture(scope="module")
def team_repo(team: TeamState, tiny_pipeline: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A copy of the tiny pipeline whose commands all talk to the team's server (release gates opened:
    tiny models are not meant to pass them)."""
    tmp = tmp_path_factory.mktemp("team-repo")
    repo = copy_repo(tiny_pipeline["repo"], tmp)
    (repo / "mlflow.db").unlink()  # nothing may fall back to the local database and its artifacts
    shutil.rmtree(repo / "mlartifacts")
    set_params(repo, {"fingerprint.registry.gates": {"min": {}, "max": {}}})
    env = env_for(tmp) | {"MLFLOW_TRACKING_URI": team.tracking_uri}
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "tiny pipeline"], repo, env)
    return {"repo": repo, "env": env, "tmp": tmp}


def _client(team: TeamState):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=team.tracking_uri, registry_uri=team.tracking_uri)


def test_stages_registry_identify_and_serving_go_through_the_server(team: TeamState, team_repo: dict) -> None:
    repo, env, tmp = team_repo["repo"], team_repo["env"], team_repo["tmp"]
    run(["dvc", "repro", "-f", "-s", *FINGERPRINT_STAGES], repo, env)
    assert not (repo / "mlflow.db").exists() and not (repo / "mlartifacts").exists()
    client = _client(team)
    runs = client.search_runs([client.get_experiment_by_name("musicid-fingerprint").experiment_id])
    stages = {r.data.tags["musicid.stage"]: r for r in runs}
    assert {"fingerprint-train", "fingerprint-evaluate", "fingerprint-report"} <= set(stages)  # index: untracked
    train = stages["fingerprint-train"]
    assert train.data.params["train.epochs"] and len(client.get_metric_history(train.info.run_id, "train_loss")) >= 1
    # artifacts went through the server's proxy into its destination folder
    assert train.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert any((Path(team.dir) / "artifacts").rglob("history.csv"))

    out = run(["musicid", "registry", "promote", "candidate", "--alias", "champion"], repo, env)
    assert "champion" in out
    ref = json.loads((repo / "data/manifests/refs.jsonl").read_text().splitlines()[0])
    audio, rate = sf.read(repo / "data/ingested" / ref["path"])
    sf.write(tmp / "clip.wav", audio[int(1.0 * rate) : int(3.5 * rate)], rate)
    answered = subprocess.run(["musicid", "identify", str(tmp / "clip.wav"), "--json"], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=300)
    assert answered.returncode == 0, answered.stderr
    assert "version" in answered.stderr and json.loads(answered.stdout)["matches"]
    listed = run(["musicid", "registry", "list"], repo, env)
    assert "champion" in listed

    port = free_port()
    server = subprocess.Popen(["mlflow", "models", "serve", "-m", "models:/musicid-fingerprinter@champion",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], env=env, cwd=tmp,
                              stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.log", "w"), start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp / "serve.log").read_text()[-2000:]
                time.sleep(1)
        body = json.dumps({"dataframe_records": [{"audio": encode_audio(tmp / "clip.wav")}], "params": {"top": 1}})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body.encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as reply:
            predictions = json.loads(reply.read())["predictions"]
        assert predictions[0]["matches"] and predictions[0]["matches"][0]["ref"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_a_two_worker_dvc_queue_writes_both_experiments_runs_at_once(team: TeamState, team_repo: dict) -> None:
    """`dvc queue start -j 2`: two experiments train at the same time, both write their runs to PostgreSQL
    through the server (SQLite would serialise them or say "database is locked")."""
    repo, env = team_repo["repo"], team_repo["env"]
    run(["dvc", "exp", "run", "--queue", "-S", "fingerprint.train.epochs=1,3", "fingerprint-train"], repo, env)
    started = time.monotonic()
    status = run_queue(repo, env)
    elapsed = time.monotonic() - started
    assert status.count("Success") == 2, status
    client = _client(team)
    runs = client.search_runs([client.get_experiment_by_name("musicid-fingerprint").experiment_id],
                              filter_string="tags.`musicid.stage` = 'fingerprint-train'")
    queued = [r for r in runs if r.data.tags.get("musicid.dvc_exp")]
    assert sorted(r.data.params["train.epochs"] for r in queued) == ["1", "3"], [r.data.tags for r in queued]
    assert all(r.info.status == "FINISHED" for r in queued)
    # the two ran side by side: each started before the other ended
    first, second = sorted(queued, key=lambda r: r.info.start_time)
    assert second.info.start_time < first.info.end_time, "the queue ran the experiments one after the other"
    print(f"two queued experiments, {len(queued)} training runs written concurrently in {elapsed:.1f} s")
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db"))


def test_a_server_that_goes_away_mid_stage_ends_it_with_one_line_and_no_half_artifact(
        team_repo: dict, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A second server (its own database) stopped while `dvc repro` runs fingerprint-train: the stage fails
    with one line naming the server, and no model folder or staging is left for a later run to trust."""
    repo, env = team_repo["repo"], team_repo["env"]
    folder = tmp_path_factory.mktemp("team-doomed")
    doomed = up(folder, pg_port=free_port(), mlflow_port=free_port())
    try:
        # no early stop: the stage must still be training when the server goes (CI saw a tiny run converge,
        # stop early and finish cleanly in the seconds `down` took)
        set_params(repo, {"fingerprint.train": {"epochs": 200, "patience": 200}})
        env = env | {"MLFLOW_TRACKING_URI": doomed.tracking_uri}
        stage = subprocess.Popen(["dvc", "repro", "-f", "-s", "fingerprint-train"], cwd=repo, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        client = _client(doomed)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the run is open and has logged an epoch
            experiment = client.get_experiment_by_name("musicid-fingerprint")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if runs and client.get_metric_history(runs[0].info.run_id, "train_loss"):
                break
            assert stage.poll() is None, stage.communicate()
            time.sleep(0.5)
        down(folder)  # the server and its database go away mid-training
        stderr, _ = stage.communicate(timeout=300)
        assert stage.returncode != 0
        lines = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and doomed.tracking_uri in lines[0] and "Traceback" not in stderr, stderr[-3000:]
        assert not (repo / "models/fingerprint").exists()
        assert not [p for p in (repo / "models").iterdir() if ".tmp-" in p.name]
    finally:
        down(folder, purge=True)
        run(["git", "checkout", "-q", "--", "params.yaml"], repo, env)
        run(["dvc", "checkout", "-f", "models/fingerprint"], repo, env)
