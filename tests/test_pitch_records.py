"""The transcriber in MLflow: records of every evaluation run, the registered bundle of two networks, serving."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from musicid.cli import main
from musicid.config import RegistryConfig, TrackingConfig, TranscribeConfig
from musicid.families.pitch import pyfunc_transcriber_entry
from musicid.families.pitch.notenet import NoteNet, NoteNetSpec
from musicid.families.pitch.records import TAG_EVAL_RUN, collect, table_rows
from musicid.families.pitch.transcribe import load_transcriber
from musicid.models.io import save_model
from musicid.tracking import fetch, promote, register_bundle, stage_run
from musicid.tracking.runs import TAG_SIGNATURE

TRACKING = TrackingConfig(system_metrics=False)
REGISTRY = TranscribeConfig().registry


@pytest.fixture(scope="module")
def networks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An untrained onset and frame network (tiny) and a 2 s tone."""
    root = tmp_path_factory.mktemp("notenets")
    out = {}
    for kind in ("onset", "frame"):
        torch.manual_seed(1)
        spec = NoteNetSpec(kind=kind, channels=[4, 4, 4], lstm_hidden=4, context_frames=3)
        save_model(NoteNet(spec), spec.to_dict(), "pitch", root / kind, {"notes": {"window_frames": 32}})
        out[kind] = root / kind
    t = np.arange(32000) / 16000
    sf.write(root / "tone.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    out["tone"] = root / "tone.wav"
    return out


def _evaluation_run(signature: str, pos_weight: float, test_f1: float, onset_threshold: float = 0.5,
                    tuned: dict[str, float] | None = None) -> str:
    params = {"onset": {"pos_weight": pos_weight, "context_frames": 5}, "frame": {"pos_weight": 1.0},
              "transcribe": {"onset_threshold": onset_threshold, "frame_threshold": 0.6, "adjacent_time_s": 0.05,
                             "min_note_s": 0.05}}
    with stage_run("pitch-transcribe-evaluate", TRACKING, params, signature=signature, family="pitch") as run:
        run.log_metrics({"chorales_note_onset_f1": test_f1, "chorales_note_onset_precision": test_f1 + 0.05,
                         "chorales_note_onset_recall": test_f1 - 0.05, "synthetic_note_onset_f1": test_f1 / 2,
                         "onset_train_f1": 0.7, "onset_eval_f1": 0.6, "frame_eval_f1": 0.8,
                         "chorales_seconds_per_audio_minute": 1.5}
                        | {f"tuned_{k}": v for k, v in (tuned or {}).items()})
        return run.run_id


def _register(networks: dict[str, Path], signature: str, metrics: dict[str, float], eval_run: str) -> str:
    with stage_run("pitch-transcribe-report", TRACKING, {}, family="pitch"):
        version, _ = register_bundle(networks["onset"], None, metrics, REGISTRY,
                                     {"transcribe": {"onset_threshold": 0.3}, "window_frames": 32},
                                     {TAG_EVAL_RUN: eval_run}, pyfunc_transcriber_entry.__file__, 1,
                                     extra={"frame": networks["frame"]}, signature=signature)
    return version


def test_records_list_every_run_best_first_mark_the_champion_and_fold_repeats(
        mlflow_db: Path, networks: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    low = _evaluation_run("aaa+bbb", 1.0, 0.40)
    best = _evaluation_run("ccc+ddd", 2.5, 0.80)
    _evaluation_run("eee+fff", 4.0, 0.60)
    _evaluation_run("eee+fff", 4.0, 0.60)  # the same networks and post-processing again: folded
    _evaluation_run("eee+fff", 4.0, 0.55, onset_threshold=0.4)  # other post-processing: its own row
    _evaluation_run("eee+fff", 4.0, 0.50, tuned={"onset_threshold": 0.3, "frame_threshold": 0.2, "val_note_f1": 0.61})  # tuned: own row
    version = _register(networks, "ccc+ddd", {"chorales_note_onset_f1": 0.8, "chorales_seconds_per_audio_minute": 1.5}, best)
    promote(REGISTRY.model_name, version, "champion", REGISTRY.gates)

    records, folded, note = collect(TRACKING, REGISTRY)
    assert folded == 1 and len(records) == 5 and f"version {version}" in note
    headers, rows = table_rows(records, "chorales")
    f1 = headers.index("test chorales note F")
    assert [r[f1] for r in rows] == ["0.800", "0.600", "0.550", "0.500", "0.400"]
    tuned_row = rows[3]  # the thresholds it chose on validation, not the params it was given
    assert tuned_row[headers.index("onset thr")] == "0.3" and tuned_row[headers.index("frame thr")] == "0.2"
    assert tuned_row[headers.index("val note F1 (tuning)")] == "0.610" and rows[2][headers.index("val note F1 (tuning)")] == "–"
    assert not any(h.startswith("test val") for h in headers)  # the tuning's validation F1 is not a test set
    assert rows[2][headers.index("onset thr")] == "0.4"
    assert rows[0][0] == "*" and not any(r[0] for r in rows[1:])
    assert rows[0][headers.index("onset pos_weight")] == "2.5" and rows[-1][headers.index("signature")] == "aaa+bbb"
    assert rows[0][headers.index("test synthetic note F1")] == "0.400"
    assert low in {r.run_id for r in records}

    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["pitch", "records", "--out-dir", "out"])
    assert done.exit_code == 0, done.output
    assert "5 runs (1 repeats" in done.output and "0.850/0.750/0.800" in done.output
    table = list(csv.DictReader(open(tmp_path / "out" / "records.csv")))
    assert [row["champion"] for row in table] == ["yes", "", "", "", ""] and table[0]["onset pos_weight"] == "2.5"
    assert "| * | " in (tmp_path / "out" / "records.md").read_text()


def test_records_without_runs_say_how_to_make_one(mlflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["pitch", "records"])
    assert done.exit_code == 0 and "no transcription runs yet" in done.output


def test_transcriber_bundle_ships_both_networks_and_serves_from_the_registry(
        mlflow_db: Path, networks: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tr = load_transcriber(networks["onset"], networks["frame"], "cpu", 32)
    run_id = _evaluation_run(tr.signature, 1.0, 0.7)
    version = _register(networks, tr.signature, {"chorales_note_onset_f1": 0.7, "chorales_seconds_per_audio_minute": 2.0},
                        run_id)
    assert _register(networks, tr.signature, {"chorales_note_onset_f1": 0.7}, run_id) == version  # same bundle: no new version

    fetched = fetch(f"models:/{REGISTRY.model_name}/{version}")
    try:
        assert fetched.version.tags[TAG_SIGNATURE] == tr.signature and set(fetched.extra) == {"frame"}
        again = load_transcriber(fetched.model_dir, fetched.extra["frame"], "cpu", fetched.settings["window_frames"])
        assert again.signatures == tr.signatures and fetched.settings["transcribe"] == {"onset_threshold": 0.3}
    finally:
        fetched.cleanup()

    served = mlflow.pyfunc.load_model(f"models:/{REGISTRY.model_name}/{version}")
    answer = served.predict({"audio": [str(networks["tone"]), str(tmp_path / "missing.wav")]})
    assert answer[0]["model_signature"] == tr.signature and isinstance(answer[0]["notes"], list)
    assert "error" in answer[1]

    monkeypatch.chdir(tmp_path)  # no params.yaml: defaults; the registry's candidate answers (no champion yet)
    done = CliRunner().invoke(main, ["transcribe", str(networks["tone"]), "--out", "out", "--json"])
    assert done.exit_code == 0, done.output
    assert "has no @champion yet; using @candidate" in done.output
    line = next(json.loads(x) for x in done.output.splitlines() if x.startswith("{"))
    assert line["model_signature"] == tr.signature
    assert (tmp_path / "out" / "tone.mid").is_file() and (tmp_path / "out" / "tone.csv").is_file()

    done = CliRunner().invoke(main, ["transcribe", str(networks["tone"]), "--out", "out", "--model",
                                     f"models:/{REGISTRY.model_name}@champion"])
    assert done.exit_code == 2 and "has no alias @champion" in done.output  # an explicit alias does not fall back
    done = CliRunner().invoke(main, ["transcribe", str(networks["tone"]), "--out", "out", "--onset-model",
                                     str(networks["frame"]), "--frame-model", str(networks["frame"])])
    assert done.exit_code == 2 and "not a onset network" in done.output


def test_registry_commands_find_the_transcriber_by_name(mlflow_db: Path, networks: dict[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    tr = load_transcriber(networks["onset"], networks["frame"], "cpu", 32)
    version = _register(networks, tr.signature, {"chorales_note_onset_f1": 0.2, "chorales_seconds_per_audio_minute": 2.0},
                        "x")
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["registry", "promote", version, "--name", REGISTRY.model_name])
    assert done.exit_code == 2 and "chorales_note_onset_f1 0.2 (needs >= 0.4)" in done.output
    done = CliRunner().invoke(main, ["registry", "compare", REGISTRY.model_name])
    assert done.exit_code == 0 and "note F1 chorales" in done.output and "0.200" in done.output
    done = CliRunner().invoke(main, ["registry", "list", "--family", "works", "--name", REGISTRY.model_name])
    assert done.exit_code == 2 and "family works registers musicid-work-identifier" in done.output
    assert RegistryConfig().model_name != REGISTRY.model_name


def test_tuning_without_validation_pieces_is_refused_in_one_line_naming_the_keys(
        networks: dict[str, Path], tmp_path: Path) -> None:
    from musicid.errors import NotReadyError
    from musicid.families.pitch.transcribe_eval import tune_post_processing

    tr = load_transcriber(networks["onset"], networks["frame"], "cpu", 32)
    (tmp_path / "chorales").mkdir()
    (tmp_path / "chorales" / "tracks.csv").write_text("track,piece,split,duration_s,notes,description\n"
                                                     "bwv1_6_r1,bwv1_6,test,1.0,1,piano\n")  # test pieces only
    with pytest.raises(NotReadyError, match="pitch_transcribe.tune.enabled") as refused:
        tune_post_processing(tr, tmp_path, TranscribeConfig())
    assert "\n" not in str(refused.value)
