"""End to end: the real `dvc repro` (synth → report, MLflow registry included) in a temporary copy."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from e2e_repo import STAGES, WORKS_STAGES, copy_repo, make_repo
from musicid.families import FAMILY_NAMES
from musicid.families.fingerprint.open_set import OpenSetThreshold
from e2e_repo import env_for as _env
from e2e_repo import run as _run
from e2e_repo import set_params as _set_params
from musicid.store import open_store, read_windows

pytestmark = pytest.mark.slow


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


@pytest.fixture(scope="module")
def reproduced(tiny_pipeline: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real `dvc repro` of every stage on tiny params (the session's), copied for this module's tests (in file order)."""
    tmp = tmp_path_factory.mktemp("pipeline")
    repo, env = copy_repo(tiny_pipeline["repo"], tmp), _env(tmp)
    return {"repo": repo, "env": env, "tmp": tmp, "ran": _ran(tiny_pipeline["output"])}


def _ran(output: str) -> set[str]:
    return {stage for stage in STAGES if f"Running stage '{stage}'" in output}


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_family_contract(reproduced: dict, name: str, tmp_path: Path) -> None:
    """What every family on the spine must do: validated params, its stages in a tiny repro, a
    self-checked model that loads through the family it records, and a predictor answering in its
    JSON contract (errors included) from the registry."""
    import mlflow
    import yaml

    from musicid.config import load_params, parse_params
    from musicid.errors import ConfigError
    from musicid.families import FAMILIES, load_model
    from musicid.models.io import ModelError

    repo, family = reproduced["repo"], FAMILIES[name]
    params = load_params(repo / "params.yaml")
    assert family.params(params) is getattr(params, name)
    with pytest.raises(ConfigError, match=f"unknown key {name}.nope"):
        parse_params({name: {"nope": 1}})
    # a tiny dvc repro ran every one of its stages and wrote its artifacts where the layout says
    assert set(family.stage_names()) <= reproduced["ran"]
    searched = "index" in family.stages  # a family that searches a catalog has an index
    for path in (family.layout.model, family.layout.shards, family.layout.model_card) + ((family.layout.index,) if searched else ()):
        assert (repo / path).exists(), path
    # model folders load through the family they record, self-checked; tampered weights are refused
    loaded = load_model(repo / family.layout.model, "cpu")
    config = json.loads((repo / family.layout.model / "config.json").read_text())
    assert config["family"] == name and loaded.signature == config["signature"]
    import shutil

    shutil.copytree(repo / family.layout.model, tmp_path / "tampered")
    weights = (tmp_path / "tampered" / "model.pt").read_bytes()
    (tmp_path / "tampered" / "model.pt").write_bytes(weights[:-64] + bytes(64))
    with pytest.raises(ModelError):
        load_model(tmp_path / "tampered", "cpu")
    # the registered predictor (pyfunc, as served) answers in the family's contract
    registry = family.registry(params)
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model(f"models:/{registry.model_name}@{registry.candidate_alias}")
        query = _query_audio(repo, name, tmp_path)
        (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVE")
        answers = model.predict({"audio": [str(query), str(tmp_path / "broken.wav")]})
    finally:
        mlflow.set_tracking_uri(None)
    key = {"fingerprint": "matches", "works": "works", "pitch": "frames"}[name]
    assert answers[0]["query"] == str(query) and answers[0][key] and "error" not in answers[0]
    assert answers[1]["error"] and answers[1][key] == []
    assert yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].keys() >= set(family.stage_names())


def _query_audio(repo: Path, family: str, tmp_path: Path) -> Path:
    if family == "pitch":  # a 440 Hz tone: the pitch family reads any audio, not the catalog's
        import soundfile as sf

        t = np.arange(44100) / 44100
        sf.write(tmp_path / "a4.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 44100)
        return tmp_path / "a4.wav"
    if family == "works":
        row = json.loads((repo / "data/splits/works/test.jsonl").read_text().splitlines()[0])
    else:
        row = json.loads((repo / "data/manifests/refs.jsonl").read_text().splitlines()[0])
    return repo / "data/ingested" / row["path"]


def test_transcription_stages_write_their_networks_records_and_notes(reproduced: dict, tmp_path: Path) -> None:
    """The labelled sets, both networks (per-epoch frame F1, train and eval), mir_eval scores, and
    `musicid transcribe` writing MIDI + CSV (silence: no notes, a warning, exit 0; a broken file: exit 1)."""
    import soundfile as sf

    repo, env = reproduced["repo"], reproduced["env"]
    notes = json.loads((repo / "reports/pitch/notes.json").read_text())["sets"]
    assert {f"{s}-{p}" for s in ("synthetic", "chorales") for p in ("train", "val", "test")} == set(notes)
    assert all(v["rows"] > 0 for v in notes.values())
    for kind in ("onset", "frame"):
        history = (repo / f"reports/pitch/{kind}-train/history.csv").read_text().splitlines()
        assert {"train_f1", "eval_f1", "eval_precision", "eval_recall"} <= set(history[0].split(","))
        config = json.loads((repo / f"models/pitch-{kind}/config.json").read_text())
        assert config["spec"]["kind"] == kind and config["family"] == "pitch"
    evaluation = json.loads((repo / "reports/pitch/transcribe/metrics.json").read_text())
    for source in ("synthetic", "chorales"):
        result = evaluation["sets"][source]
        assert result["tracks"] >= 1 and {"onset_f1", "onset_offset_f1"} <= set(result["note"])
        assert 0 <= result["frame_level"]["frame"]["f1"] <= 1
        assert sum(s["pieces"] for s in result["by_style"].values()) == result["tracks"]
        assert (repo / f"reports/pitch/transcribe/note-f1-by-style-{source}.png").is_file()
    assert evaluation["networks"]["onset"]["kind"] == "onset" and "eval_f1" in evaluation["networks"]["frame"]
    # post-processing chosen on the validation pieces, then evaluated and registered as chosen
    tuning = evaluation["tuning"]
    assert len(tuning["tried"]) == 48 and tuning["val_pieces"]["chorales"] >= 1
    assert {k: evaluation["post_processing"][k] for k in tuning["chosen"]} == tuning["chosen"]
    assert tuning["val_note_onset_f1"] == max(t["val_note_onset_f1"] for t in tuning["tried"])
    # pitch-train-prod: both networks on every train + val track, 2 folds + final each, test tracks held out
    prod = json.loads((repo / "reports/pitch/train-prod/metrics.json").read_text())
    assert set(prod["networks"]) == {"onset", "frame"} and prod["early_stop_on"] == "chorales"
    for kind in ("onset", "frame"):
        assert json.loads((repo / f"models/pitch-prod/{kind}/config.json").read_text())["phases"] == ["fold-1", "fold-2", "final"]
        assert prod["networks"][kind]["train_tracks"] == {"synthetic": 2, "chorales": 2}
        assert f"{kind}_test_chorales_f1" in prod["final"]
    best = _run(["musicid", "exp", "best-epochs"], repo, env, stdout_only=True)
    assert "(onset network)" in best and "(frame network)" in best and "## by test_chorales_f1" in best
    # registered as musicid-transcriber (both networks + post-processing), with its card and checklist
    listed = _run(["musicid", "registry", "list", "--name", "musicid-transcriber"], repo, env)
    onset_sig = json.loads((repo / "models/pitch-onset/config.json").read_text())["signature"]
    assert "@candidate" in listed and onset_sig in listed
    assert "musicid-transcriber" in (repo / "reports/pitch/transcriber-model-card.md").read_text()
    assert "gate `chorales_note_onset_f1`" in (repo / "reports/pitch/transcriber-release-checklist.md").read_text()
    assert "1 runs" in _run(["musicid", "pitch", "records"], repo, env)
    sf.write(tmp_path / "silence.wav", np.zeros(16000, dtype=np.float32), 16000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVE")
    done = subprocess.run(["musicid", "transcribe", str(tmp_path / "silence.wav"), "--out", str(tmp_path / "out")],
                          cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "using @candidate" in done.stderr  # the registered transcriber answers (no champion yet)
    assert "no notes found" in done.stderr and (tmp_path / "out/silence.mid").is_file()
    assert (tmp_path / "out/silence.csv").read_text().splitlines() == ["onset_s,offset_s,pitch,velocity"]
    done = subprocess.run(["musicid", "transcribe", str(tmp_path / "broken.wav"), str(tmp_path / "silence.wav"),
                           "--out", str(tmp_path / "out2")], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "error:" in done.stderr and (tmp_path / "out2/silence.csv").is_file()


def test_full_repro_then_only_changed_stages_rerun(reproduced: dict) -> None:
    repo, env, tmp_path = reproduced["repo"], reproduced["env"], reproduced["tmp"]
    assert reproduced["ran"] == set(STAGES)
    assert "up to date" in _run(["dvc", "status"], repo, env)

    catalog = json.loads((repo / "data/ingested/catalog.json").read_text())["tracks"]
    assert len(catalog) == 8 and {t["work_id"] for t in catalog} == {f"w{w:04d}" for w in range(4)}
    report = json.loads((repo / "reports/ingest/inspect.json").read_text())
    assert report["readiness"]["ready_for_smoke"] is True
    assert _run(["musicid", "data", "validate", "data/manifests"], repo, env).startswith("ok")

    split_tracks = {}
    for split in ("train", "val", "test"):
        group = open_store(repo / f"data/shards/fingerprint/{split}.zarr")
        assert group.attrs["sample_rate"] == 8000 and group.attrs["window_samples"] == 12000
        split_tracks[split] = set(group.attrs["track_ids"])
        rows = group["waveform"].shape[0]
        # each 4-6 s track gives (duration - 1.5) / 0.5 + 1 windows of 1.5 s at hop 0.5 s
        assert 6 * len(split_tracks[split]) <= rows <= 10 * len(split_tracks[split])
        waveform = read_windows(repo / f"data/shards/fingerprint/{split}.zarr", np.arange(rows))
        assert np.abs(waveform).max() > 0.05  # real audio, not zeros
    assert not (split_tracks["train"] & split_tracks["test"])

    metrics = json.loads((repo / "reports/fingerprint/eval/metrics.json").read_text())
    assert metrics["queries"] == 4 * 2 and set(metrics["by_condition"]) == {"noise", "speed"}
    assert 0.0 <= metrics["main"]["top1"] <= 1.0 and metrics["latency_ms"]["p95"] > 0
    # open set: every query also answered with its own track left out; the threshold lets ≤ 1 % through
    open_set = metrics["open_set"]
    rows = [json.loads(line) for line in (repo / "reports/fingerprint/eval/queries.jsonl").read_text().splitlines()]
    curve = OpenSetThreshold.from_dict(open_set)
    assert open_set["negatives"] == len(rows) == 8 and open_set["target_fpr"] == 0.01
    assert open_set["fpr"] <= 0.01 and all(row["impostor_score"] < curve.at(row["segments"]) for row in rows)
    model_config = json.loads((repo / "models/fingerprint/config.json").read_text())
    assert model_config["family"] == "fingerprint"
    assert json.loads((repo / "data/index/fingerprint/meta.json").read_text())["model_signature"] == model_config["signature"]
    assert (repo / "reports/fingerprint/eval/hit_rate.png").stat().st_size > 0
    plots = _run(["dvc", "plots", "show", "--json"], repo, env)
    assert "Fingerprint hit rate vs query length" in plots and "main_top1" in plots and "val_top1" in plots
    assert "Works training curves" in plots and "val_mAP" in plots

    # identify a clip cut from an indexed synthetic track, through the CLI contract
    import soundfile as sf

    ref = json.loads((repo / "data/manifests/refs.jsonl").read_text().splitlines()[0])
    audio, rate = sf.read(repo / "data/ingested" / ref["path"])
    sf.write(tmp_path / "clip.wav", audio[int(1.0 * rate) : int(3.5 * rate)], rate)
    line = json.loads(_run(["musicid", "identify", str(tmp_path / "clip.wav"), "--json"], repo, env, stdout_only=True))
    assert line["query"] == str(tmp_path / "clip.wav") and line["matches"]
    assert {"ref", "score", "offset_s", "matched"} <= set(line["matches"][0])
    # the threshold came with the registered bundle: the one the evaluation calibrated for this length
    assert line["min_score"] in open_set["min_scores"] and line["matched"] == (line["matches"][0]["score"] >= line["min_score"])
    forced = json.loads(_run(["musicid", "identify", str(tmp_path / "clip.wav"), "--json", "--min-score", "1.01"],
                             repo, env, stdout_only=True))
    assert forced["matched"] is False and forced["matches"] == [m | {"matched": False} for m in line["matches"]]

    # the report stage wrote the release documents and registered the model (alias candidate)
    card = (repo / "reports/fingerprint/model-card.md").read_text()
    assert model_config["signature"] in card and "## Limitations" in card and "| **main top-1** |" in card
    checklist = (repo / "reports/fingerprint/release-checklist.md").read_text()
    assert "| gate `main_top1_3s` ≥ 0.9 |" in checklist and "index built with this model | pass" in checklist
    assert "× real time" in (repo / "reports/fingerprint/benchmark-report.md").read_text()
    versions = json.loads(_run(["musicid", "registry", "list", "--json"], repo, env, stdout_only=True))
    assert [(v["version"], v["aliases"], v["signature"]) for v in versions] == [("1", ["candidate"], model_config["signature"])]
    assert versions[0]["metrics"]["main_top1"] == metrics["main"]["top1"] and versions[0]["data_version"].endswith(".dir")
    runs = _mlflow_runs(repo)
    assert {run.data.tags["musicid.stage"] for run in runs} == {"fingerprint-train", "fingerprint-evaluate", "fingerprint-report",
                                                                   "fingerprint-train-prod"}
    train_run = next(run for run in runs if run.data.tags["musicid.stage"] == "fingerprint-train")
    assert train_run.data.params["train.epochs"] == "2" and train_run.data.metrics["best_val_top1"] >= 0
    assert all(run.data.tags["musicid.data_version"] == versions[0]["data_version"] for run in runs)
    prod = [run for run in runs if run.data.tags["musicid.stage"] == "fingerprint-train-prod"]
    (prod_run,) = [run for run in prod if "musicid.phase" not in run.data.tags]  # the stage's run, its phases nested
    assert sorted(run.data.tags["musicid.phase"] for run in prod if run is not prod_run) == ["final", "fold-1", "fold-2"]
    assert all(run.data.tags.get("mlflow.parentRunId") == prod_run.info.run_id for run in prod if run is not prod_run)
    assert all(run.data.tags.get("mlflow.parentRunId") == train_run.info.run_id for run in runs
               if run is not train_run and run not in prod)

    _check_works(repo, env, tmp_path)

    # editing one family's model code makes exactly that family's model stages stale
    model_code = repo / "src/musicid/families/works/model.py"
    original = model_code.read_text()
    model_code.write_text(original + "\n# edited\n")
    assert _stale(_run(["dvc", "status"], repo, env)) == {"works-train", "works-index", "works-evaluate", "works-report",
                                                          "works-train-prod"}
    model_code.write_text(original)
    fp_code = repo / "src/musicid/families/fingerprint/model.py"
    fp_original = fp_code.read_text()
    fp_code.write_text(fp_original + "\n# edited\n")
    assert _stale(_run(["dvc", "status"], repo, env)) == {
        "fingerprint-train", "fingerprint-index", "fingerprint-evaluate", "fingerprint-report", "fingerprint-train-prod"}
    fp_code.write_text(fp_original)
    assert "up to date" in _run(["dvc", "status"], repo, env)

    _set_params(repo, {"fingerprint.shards": {"dtype": "float32"}})
    assert _stale(_run(["dvc", "status"], repo, env)) == {"fingerprint-shards"}
    # rebuild only the stale store (the rest of the chain reruns the same way, as the experiment tests show)
    assert _ran(_run(["dvc", "repro", "fingerprint-shards"], repo, env)) == {"fingerprint-shards"}
    assert open_store(repo / "data/shards/fingerprint/train.zarr")["waveform"].dtype == np.float32
    status = _stale(_run(["dvc", "status"], repo, env))
    assert {"fingerprint-train", "fingerprint-report"} <= status and not status & {"fingerprint-shards", "synth"}
    assert not status & set(WORKS_STAGES)


def _stale(status: str) -> set[str]:
    """Stage names `dvc status` lists as changed."""
    return {line.strip().rstrip(":") for line in status.splitlines() if line and not line.startswith((" ", "\t"))
            and line.rstrip().endswith(":") and line.strip().rstrip(":") in STAGES}


def _check_works(repo: Path, env: dict, tmp_path: Path) -> None:
    """The work identifier's artifacts: leak-free splits and stores, evaluation, index, registry, identify."""
    from musicid.store.ragged import RaggedStore

    split = json.loads((repo / "data/splits/works/summary.json").read_text())
    assert split["leakage"]["ok"] and split["works"]["test_unseen"] >= 1 and split["performances"]["train"] >= 2
    stores = {name: RaggedStore(repo / f"data/shards/works/{name}.zarr") for name in ("train", "val", "test")}
    assert set(stores["train"].column("speed")) == {1.0, 1.1}  # speed copies for train only ...
    assert set(stores["test"].column("speed")) == set(stores["val"].column("speed")) == {1.0}
    assert not set(stores["train"].column("track_id")) & set(stores["test"].column("track_id"))
    assert stores["train"].attrs["width"] == 96 and len(stores["test"]) == split["performances"]["test_unseen"] + \
        split["performances"]["test_seen"]
    works_model = json.loads((repo / "models/works/config.json").read_text())
    assert works_model["family"] == "works" and works_model["spec"]["backbone"] == "conformer"
    evaluation = json.loads((repo / "reports/works/eval/metrics.json").read_text())
    assert evaluation["model_signature"] == works_model["signature"]
    assert set(evaluation["testsets"]) == {"test_unseen", "test_seen"}
    assert 0 <= evaluation["testsets"]["test_unseen"]["mAP"] <= 1 and evaluation["testsets"]["test_unseen"]["MR1"] >= 1
    assert (repo / "reports/works/eval/tsne.png").stat().st_size > 0
    assert (repo / "reports/works/eval/distances_test_unseen.npz").is_file()
    history = (repo / "reports/works/train/history.csv").read_text()
    assert "mAP_test_unseen" in history and "val_mAP" in history
    assert "test_unseen_mAP" in (repo / "reports/works/release-checklist.md").read_text()
    versions = json.loads(_run(["musicid", "registry", "list", "--family", "works", "--json"], repo, env, stdout_only=True))
    assert [(v["version"], v["aliases"]) for v in versions] == [("1", ["candidate"])]
    assert versions[0]["metrics"]["test_unseen_mAP"] == evaluation["testsets"]["test_unseen"]["mAP"]
    assert versions[0]["name"] == "musicid-work-identifier"
    compared = json.loads(_run(["musicid", "registry", "compare", "musicid-work-identifier", "--json"], repo, env,
                               stdout_only=True))
    (row,) = compared["versions"]
    assert compared["family"] == "works" and row["test_unseen_mAP"] == versions[0]["metrics"]["test_unseen_mAP"]
    assert row["latency_p50_ms"] > 0 and row["peak_memory_mb"] > 0 and 0 < row["model_size_mb"] < 50
    # identify a performance through the registry's candidate (no champion yet: a warning, then an answer)
    test_row = next(json.loads(line) for line in (repo / "data/splits/works/test.jsonl").read_text().splitlines())
    args = ["musicid", "works", "identify", str(repo / "data/ingested" / test_row["path"]), "--json", "--top", "3"]
    answer = json.loads(_run(args, repo, env, stdout_only=True))
    assert len(answer["works"]) == 3 and answer["works"][0]["score"] >= answer["works"][-1]["score"]
    assert "no @champion yet; using @candidate" in _run(args, repo, env)


def _mlflow_runs(repo: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("musicid-fingerprint")
    return client.search_runs([experiment.experiment_id])


def test_folder_source_with_a_corrupt_file_quarantines_it_and_succeeds(repo: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    _run(["dvc", "repro", "synth"], repo, env)
    music = repo / "music"
    with tarfile.open(repo / "data/raw/synthetic.tar.gz") as tar:
        tar.extractall(music, filter="data")
    victim = sorted((music / "audio").rglob("*.flac"))[0]
    victim.write_bytes(victim.read_bytes()[:100] + b"\0" * 5000)
    _set_params(repo, {"ingest": {"source": "music"}})

    _run(["dvc", "repro", "fingerprint-shards", "works-features"], repo, env)
    quarantine = json.loads((repo / "data/ingested/quarantine.json").read_text())["files"]
    assert [(q["source_path"], q["reason"]) for q in quarantine] == [
        (victim.relative_to(music).as_posix(), "undecodable")
    ]
    assert len(json.loads((repo / "data/ingested/catalog.json").read_text())["tracks"]) == 7
    assert (repo / "data/shards/fingerprint/train.zarr").is_dir()
    assert victim.stem not in json.dumps(json.loads((repo / "data/shards/works/summary.json").read_text()))
