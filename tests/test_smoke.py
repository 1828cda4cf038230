"""`musicid smoke`: the whole chain on a small folder with the DVC stages' own functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from musicid.cli import main

pytestmark = pytest.mark.slow


def test_smoke_runs_check_to_report_and_prints_the_report_paths(audio_folder: Path, tmp_path: Path, mlflow_db: Path) -> None:
    out = tmp_path / "smoke"
    args = ["smoke", "folder", str(audio_folder), "--device", "auto", "--out", str(out), "--subset", "0",
            "--query-duration", "2", "--eval-ratio", "0.2", "--epochs", "1", "--steps", "2", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{\n"):])
    assert "smoke: device auto → cpu" in result.stderr  # resolved before anything ran
    assert summary["device"] == "cpu" and summary["tracks"] == 6 and summary["quarantined"] == 6
    assert summary["splits"]["test"] == 2 and summary["queries"] > 0 and 0 <= summary["main_top1"] <= 1
    for path in summary["reports"].values():
        assert Path(path).is_file(), path
    assert json.loads((out / "data/index/fingerprint/meta.json").read_text())["n_refs"] == 6

    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    assert client.get_model_version_by_alias("musicid-fingerprinter-smoke", "candidate")
    assert client.get_experiment_by_name("musicid-smoke-fingerprint") is not None


def test_smoke_refuses_a_source_that_is_not_ready(tmp_path: Path, mlflow_db: Path) -> None:
    import soundfile as sf

    from conftest import tone

    (tmp_path / "one").mkdir()
    sf.write(tmp_path / "one" / "a.wav", tone(3.0), 22050)
    result = CliRunner().invoke(main, ["smoke", str(tmp_path / "one"), "--out", str(tmp_path / "s"), "--query-duration", "2"])
    assert result.exit_code == 2 and "not ready for a smoke run: only 1 decodable audio file(s)" in result.stderr
