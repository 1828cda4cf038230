"""MLflow tracking and registry: runs land where they should with provenance; registry aliases, gates, identify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from musicid.cli import main
from musicid.config import GatesConfig, IdentifyConfig, IndexConfig, RegistryConfig, SynthConfig, TrackingConfig
from musicid.data.synth import render_track_preview
from musicid.index import build_index, index_refs_from_folder
from musicid.families.fingerprint.model import Fingerprinter, FingerprinterSpec
from musicid.families.fingerprint.io import load_model, save_model
from musicid.tracking import TrackingError, check_gates, fetch, list_versions, promote, register_bundle, stage_run
from musicid.families.fingerprint import pyfunc_entry
from musicid.tracking.pyfunc_io import encode_audio
from musicid.tracking.runs import (
    TAG_DATA_VERSION, TAG_DVC_EXP, TAG_GIT_REV, TAG_SIGNATURE, TAG_STAGE, project_root, sqlite_path, tracking_uri,
)

SPEC = FingerprinterSpec(channels=(16,), hidden=128, embedding_dim=32, n_mels=64)  # see test_identify
GOOD = {"main_top1_3s": 0.97, "main_top1_10s": 1.0, "latency_p95_ms": 30.0, "main_top1": 0.95}
BAD = {"main_top1_3s": 0.62, "main_top1_10s": 0.97, "latency_p95_ms": 30.0, "main_top1": 0.7}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two untrained models (different signatures), an index for each, and a clip of an indexed track."""
    root = tmp_path_factory.mktemp("bundles")
    for work in range(3):
        audio, rate = render_track_preview(work, 0, SynthConfig(min_duration_s=8, max_duration_s=10))
        (root / "refs").mkdir(exist_ok=True)
        sf.write(root / "refs" / f"track{work}.wav", audio, rate)
        if work == 1:
            sf.write(root / "clip.wav", audio[int(2.0 * rate) : int(5.0 * rate)], rate)
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        save_model(Fingerprinter(SPEC), root / f"model_{name}")
        loaded = load_model(root / f"model_{name}", "cpu")
        build_index(index_refs_from_folder(root / "refs"), loaded, root / f"index_{name}", IndexConfig(), progress=False)
    return {"root": root, "clip": root / "clip.wav", **{k: root / k for k in ("model_a", "model_b", "index_a", "index_b")}}


def _register(bundles: dict[str, Path], which: str, metrics: dict[str, float], cfg: RegistryConfig | None = None) -> str:
    with stage_run("report", TrackingConfig(system_metrics=False), {"registry": {}}):
        version, _ = register_bundle(bundles[f"model_{which}"], bundles[f"index_{which}"], metrics, cfg or RegistryConfig(),
                                     {"identify": IdentifyConfig().model_dump()}, {"musicid.stage": "report"},
                                     pyfunc_entry.__file__, IdentifyConfig().top)
    return version


# --- where runs go ------------------------------------------------------------------------------


def test_tracking_uri_is_absolute_and_follows_dvc_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        monkeypatch.delenv(name, raising=False)
    repo = tmp_path / "repo"
    (repo / "src" / "deep").mkdir(parents=True)
    (repo / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(repo / "src" / "deep")
    assert project_root() == repo.resolve()
    assert tracking_uri() == f"sqlite:///{repo.resolve()}/mlflow.db"
    assert sqlite_path(tracking_uri()) == repo.resolve() / "mlflow.db"
    # a queued DVC experiment runs in .dvc/tmp/exps/...; DVC_ROOT names the real repository
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "elsewhere"))
    assert tracking_uri() == f"sqlite:///{(tmp_path / 'elsewhere').resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////srv/runs.db")
    assert tracking_uri() == "sqlite:////srv/runs.db" and sqlite_path(tracking_uri()) == Path("/srv/runs.db")


def test_stage_run_records_params_metrics_tags_and_nesting(mlflow_db: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  fingerprint-shards:\n    cmd: x\n    outs:\n    - path: data/shards/fingerprint\n"
        "      md5: abc123.dir\n"
    )
    monkeypatch.chdir(work)
    monkeypatch.setenv("DVC_EXP_NAME", "brave-lark")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "f" * 40)
    cfg = TrackingConfig(experiment="unit", system_metrics=False)
    with stage_run("fingerprint-train", cfg, {"train": {"lr": 0.003, "noise_kinds": ["pink", "hum"]}},
                   family="fingerprint") as run:
        for epoch in (1, 2):
            run.log_metrics({"val_top1": 0.1 * epoch}, step=epoch)
        run.set_tags({TAG_SIGNATURE: "sig1"})
        train_id = run.run_id
    with stage_run("fingerprint-evaluate", cfg, {"evaluate": {"seed": 0}}, signature="sig1",
                   parent_stage="fingerprint-train", family="fingerprint") as run:
        run.log_metrics({"main_top1_3s": 0.9})
        (tmp_path / "m.json").write_text("{}")
        run.log_artifact(tmp_path / "m.json", "reports/eval")
        eval_id = run.run_id

    client = MlflowClient()
    train, evaluate = client.get_run(train_id), client.get_run(eval_id)
    assert train.data.params == {"train.lr": "0.003", "train.noise_kinds": "pink,hum"}
    assert [m.value for m in client.get_metric_history(train_id, "val_top1")] == pytest.approx([0.1, 0.2])
    assert [m.step for m in client.get_metric_history(train_id, "val_top1")] == [1, 2]
    assert train.data.tags[TAG_STAGE] == "fingerprint-train" and train.data.tags[TAG_DVC_EXP] == "brave-lark"
    assert train.data.tags["musicid.family"] == "fingerprint"
    assert client.get_experiment(train.info.experiment_id).name == "unit-fingerprint"
    assert train.data.tags[TAG_GIT_REV] == "f" * 40 and train.data.tags[TAG_DATA_VERSION] == "abc123.dir"
    assert evaluate.data.tags["mlflow.parentRunId"] == train_id and evaluate.data.metrics["main_top1_3s"] == 0.9
    assert [a.path for a in client.list_artifacts(eval_id, "reports/eval")] == ["reports/eval/m.json"]
    # artifacts live beside the DB (absolute), not in the working directory
    assert client.get_experiment(train.info.experiment_id).artifact_location == (mlflow_db.parent / "mlartifacts").as_uri()
    assert not (work / "mlruns").exists() and not (work / "mlartifacts").exists()


def test_disabled_tracking_touches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'never.db'}")
    with stage_run("train", TrackingConfig(enabled=False), {"train": {}}) as run:
        run.log_metrics({"x": 1.0})
        assert run.run_id is None
    assert not (tmp_path / "never.db").exists()


def test_unreachable_tracking_server_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(TrackingError) as error:
        with stage_run("train", TrackingConfig(system_metrics=False), {}):
            pass
    assert "http://127.0.0.1:9" in str(error.value) and "\n" not in str(error.value)


# --- registry -----------------------------------------------------------------------------------


def test_gates_pass_fail_and_unmeasured() -> None:
    gates = GatesConfig(min={"main_top1_3s": 0.9, "pitch_top1_3s": 0.5}, max={"latency_p95_ms": 100})
    results = {r.metric: r for r in check_gates(GOOD, gates)}
    assert results["main_top1_3s"].passed and results["latency_p95_ms"].passed
    assert not results["pitch_top1_3s"].passed and results["pitch_top1_3s"].describe() == "pitch_top1_3s not measured (needs >= 0.5)"
    assert not check_gates({"latency_p95_ms": 101.0}, gates)[-1].passed


def test_register_alias_promote_and_refusal(mlflow_db: Path, bundles: dict[str, Path]) -> None:
    assert _register(bundles, "a", GOOD) == "1"
    assert _register(bundles, "a", GOOD) == "1"  # same model + index: no duplicate version
    assert _register(bundles, "b", BAD) == "2"
    versions = {v.version: v for v in list_versions("musicid-fingerprinter")}
    assert versions["2"].aliases == ["candidate"] and versions["1"].aliases == []
    assert versions["1"].metrics["main_top1_3s"] == 0.97
    assert versions["1"].signature == load_model(bundles["model_a"], "cpu").signature

    gates = RegistryConfig().gates
    with pytest.raises(TrackingError) as refused:
        promote("musicid-fingerprinter", "candidate", "champion", gates)
    assert "version 2 fails the release gates" in str(refused.value) and "main_top1_3s 0.62 (needs >= 0.9)" in str(refused.value)
    assert "champion" not in {a for v in list_versions("musicid-fingerprinter") for a in v.aliases}

    info, results = promote("musicid-fingerprinter", "1", "champion", gates)
    assert info.version == "1" and all(r.passed for r in results)
    assert str(MlflowClient().get_model_version_by_alias("musicid-fingerprinter", "champion").version) == "1"
    with pytest.raises(TrackingError, match=r"has no version 7; versions: 1 \(@champion\), 2 \(@candidate\)"):
        promote("musicid-fingerprinter", "7", "champion", gates)


def test_promote_cli_refuses_with_the_failing_figure(mlflow_db: Path, bundles: dict[str, Path]) -> None:
    _register(bundles, "b", BAD)
    result = CliRunner().invoke(main, ["registry", "promote", "1", "--alias", "champion"])
    assert result.exit_code == 2 and "main_top1_3s 0.62 (needs >= 0.9)" in result.output
    listed = CliRunner().invoke(main, ["registry", "list", "--json"])
    assert json.loads(listed.output)[0]["aliases"] == ["candidate"]


def test_pyfunc_bundle_predicts_paths_and_base64(mlflow_db: Path, bundles: dict[str, Path]) -> None:
    _register(bundles, "a", GOOD)
    model = mlflow.pyfunc.load_model("models:/musicid-fingerprinter@candidate")
    import pandas as pd

    out = model.predict(pd.DataFrame({"audio": [str(bundles["clip"]), encode_audio(bundles["clip"])]}), params={"top": 2})
    assert [r["query"] for r in out] == [str(bundles["clip"]), "base64[1]"]
    for result in out:
        assert result["matches"][0]["ref"] == "track1.wav" and abs(result["matches"][0]["offset_s"] - 2.0) <= 0.5
        assert len(result["matches"]) == 2


# --- identify from the registry -----------------------------------------------------------------


def _identify(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["identify", *args], env=env)


def test_identify_uses_champion_then_candidate_then_env(mlflow_db: Path, bundles: dict[str, Path]) -> None:
    clip = str(bundles["clip"])
    _register(bundles, "a", GOOD)
    fallback = _identify(clip, "--json")
    assert fallback.exit_code == 0, fallback.output
    assert "has no @champion yet; using @candidate (version 1)" in fallback.stderr
    assert json.loads(fallback.stdout)["matches"][0]["ref"] == "track1.wav"

    _register(bundles, "b", BAD)
    promote("musicid-fingerprinter", "1", "champion", RegistryConfig().gates)
    champion = _identify(clip)
    assert champion.exit_code == 0 and "version 1" in champion.stderr and "warning" not in champion.stderr

    # switching models needs no code change: the environment names another version or a folder
    by_version = _identify(clip, env={"MUSICID_MODEL_URI": "models:/musicid-fingerprinter/2"})
    assert by_version.exit_code == 0 and "version 2" in by_version.stderr
    folder = _identify(clip, "--index", str(bundles["index_b"]), env={"MUSICID_MODEL_URI": str(bundles["model_b"])})
    assert folder.exit_code == 0 and str(bundles["model_b"]) in folder.stderr


def test_identify_refuses_index_from_another_model(mlflow_db: Path, bundles: dict[str, Path]) -> None:
    _register(bundles, "a", GOOD)
    promote("musicid-fingerprinter", "1", "champion", RegistryConfig().gates)
    result = _identify(str(bundles["clip"]), "--index", str(bundles["index_b"]))
    signatures = [load_model(bundles[m], "cpu").signature for m in ("model_a", "model_b")]
    assert result.exit_code == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(s in last for s in signatures)


@pytest.mark.parametrize(
    "setup, model, expected",
    [
        ("missing_db", None, "no MLflow tracking database at"),
        ("empty", "models:/nope@champion", "no registered model named nope"),
        ("registered", "models:/musicid-fingerprinter@staging", "has no alias @staging; versions: 1 (@candidate)"),
        ("registered", "models:/musicid-fingerprinter", "not a registry URI"),
    ],
)
def test_identify_registry_problems_are_one_line(mlflow_db: Path, bundles: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch, setup: str, model: str | None,
                                                 expected: str) -> None:
    if setup == "missing_db":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'absent' / 'mlflow.db'}")
    if setup == "registered":
        _register(bundles, "a", GOOD)
    result = _identify(str(bundles["clip"]), *(["--model", model] if model else []))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_fetch_downloads_model_and_bundled_index(mlflow_db: Path, bundles: dict[str, Path]) -> None:
    _register(bundles, "a", GOOD)
    fetched = fetch("models:/musicid-fingerprinter/1")
    try:
        assert (fetched.model_dir / "model.pt").is_file() and (fetched.index_dir / "index.faiss").is_file()
        assert load_model(fetched.model_dir, "cpu").signature == load_model(bundles["model_a"], "cpu").signature
    finally:
        fetched.cleanup()
    assert not fetched.model_dir.exists()
    shutil.rmtree(mlflow_db.parent / "mlartifacts")  # artifacts gone: a one-line error, not a traceback
    with pytest.raises(TrackingError, match="its artifacts hold no musicid model"):
        fetch("models:/musicid-fingerprinter/1")


@pytest.mark.slow
def test_mlflow_models_serve_answers_base64_audio(mlflow_db: Path, bundles: dict[str, Path], tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    _register(bundles, "a", GOOD)
    promote("musicid-fingerprinter", "1", "champion", RegistryConfig().gates)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    server = subprocess.Popen(
        ["mlflow", "models", "serve", "-m", "models:/musicid-fingerprinter@champion", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "w"),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
                time.sleep(1)
        body = json.dumps({"dataframe_records": [{"audio": encode_audio(bundles["clip"])}], "params": {"top": 1}})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body.encode(),
                                         {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    assert answer[0]["query"] == "base64[0]" and [m["ref"] for m in answer[0]["matches"]] == ["track1.wav"]


def test_registry_register_cli_registers_the_workspace_model(mlflow_db: Path, bundles: dict[str, Path], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "ws"
    shutil.copytree(bundles["model_a"], work / "models/fingerprint")
    shutil.copytree(bundles["index_a"], work / "data/index/fingerprint")
    cell = {"top1": 0.96, "top5": 1.0, "n": 4}
    evaluation = {
        "queries": 8, "errors": 0, "offset_accuracy": 1.0, "latency_ms": {"p50": 5.0, "p95": 9.0},
        "main": {"top1": 0.96, "top5": 1.0, "by_length": {"3s": cell, "10s": cell}},
        "by_condition": {"noise": {"3s": cell, "10s": cell}},
        "model_signature": "someone-else",
    }
    (work / "reports/fingerprint/eval").mkdir(parents=True)
    (work / "reports/fingerprint/eval/metrics.json").write_text(json.dumps(evaluation))
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", work / "params.yaml")
    monkeypatch.chdir(work)
    stale = CliRunner().invoke(main, ["registry", "register"])
    assert stale.exit_code == 2 and "run `dvc repro fingerprint-evaluate` first" in stale.output
    evaluation["model_signature"] = load_model(bundles["model_a"], "cpu").signature
    (work / "reports/fingerprint/eval/metrics.json").write_text(json.dumps(evaluation))
    done = CliRunner().invoke(main, ["registry", "register"])
    assert done.exit_code == 0, done.output
    assert "version 1 registered, alias @candidate → 1" in done.output
    (version,) = list_versions("musicid-fingerprinter")
    assert version.metrics["main_top1_3s"] == 0.96 and version.metrics["noise_top1_10s"] == 0.96
    assert MlflowClient().get_run(version.run_id).data.tags["musicid.stage"] == "fingerprint-register"


def test_promote_and_compare_all_go_through_every_registered_model(mlflow_db: Path, bundles: dict[str, Path]) -> None:
    _register(bundles, "a", GOOD)
    done = CliRunner().invoke(main, ["registry", "promote", "candidate", "--alias", "champion", "--all"])
    # the fingerprinter passes its gates; the other families have nothing registered: named, and the command fails
    assert "musicid-fingerprinter version 1 is now @champion" in done.output
    assert done.exit_code == 2 and "not promoted: musicid-work-identifier, musicid-pitch, musicid-transcriber" in done.output
    assert str(MlflowClient().get_model_version_by_alias("musicid-fingerprinter", "champion").version) == "1"
    compared = CliRunner().invoke(main, ["registry", "compare", "--all", "--json"])
    tables = json.loads(compared.output)
    assert [t["name"] for t in tables] == ["musicid-fingerprinter", "musicid-work-identifier", "musicid-pitch",
                                           "musicid-transcriber"]
    assert tables[0]["versions"][0]["main_top1_3s"] == GOOD["main_top1_3s"] and tables[1]["versions"] == []


def test_console_command_exits_fast_but_still_runs_exit_hooks_and_keeps_its_status(tmp_path: Path) -> None:
    """`musicid` (musicid.cli.run) skips the interpreter's teardown, not what a normal exit guarantees:
    thread pools shut down (MLflow keeps one), atexit hooks run (MLflow's flush), piped output flushed."""
    import subprocess
    import sys

    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, concurrent.futures, pathlib, sys\n"
        "from musicid.cli import run\n"
        "pool = concurrent.futures.ThreadPoolExecutor(1); pool.submit(lambda: None)\n"
        f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('ran'))\n"
        "sys.argv = ['musicid'] + sys.argv[1:]\n"
        "run()\n"
    )
    done = subprocess.run([sys.executable, "-c", code, "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "musicid, version" in done.stdout and marker.read_text() == "ran"
    (tmp_path / "not-a-store").mkdir()
    failed = subprocess.run([sys.executable, "-c", code, "store", "info", str(tmp_path / "not-a-store")],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and failed.stderr.strip().startswith("error:"), failed.stderr
    assert "not a Zarr v3 store" in failed.stderr
