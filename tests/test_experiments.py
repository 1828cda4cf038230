"""Experiment tools: tuning grids (validated before anything is queued), their summaries read from a
real MLflow DB, the readings of slopes, stratified folds and the determinism switch."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from musicid.cli import main
from musicid.errors import ConfigError
from musicid.experiments.grid import load_grid, point_label
from musicid.experiments.summary import collect, reading, summarise, write_reports
from musicid.experiments.tune import TAG_POINT, TAG_SEED, TAG_TUNE, plan
from musicid.tracking.runs import TAG_STAGE, configure
from musicid.training.determinism import seed_everything
from musicid.training.kfold import plan_phases, rank_epochs, stratified_folds

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def params_copy(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    return path


def _grid(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lr-margin.yaml"
    path.write_text(text)
    return path


def test_grid_crosses_values_sets_each_trainers_seed_and_plans_named_experiments(tmp_path: Path, params_copy: Path) -> None:
    grid = load_grid(_grid(tmp_path, "params:\n  works.train.lr: [0.001, 0.002]\n  works.train.triplet_margin: [0.2, 0.3]\n"),
                     params_copy)
    assert grid.name == "lr-margin" and grid.seed_keys == ("works.train.seed",)
    assert [point_label(p) for p in grid.points()][:2] == ["works.train.lr=0.001 works.train.triplet_margin=0.2",
                                                          "works.train.lr=0.001 works.train.triplet_margin=0.3"]
    planned = plan(grid, [0, 1])
    assert len(planned) == 8 and planned[0].name == "lr-margin-p0-s0" and planned[-1].name == "lr-margin-p3-s1"
    pitch = load_grid(_grid(tmp_path, "params:\n  pitch_onset.pos_weight: [1, 2]\n  pitch_frame.context_frames: [5, 9]\n"),
                      params_copy)
    assert set(pitch.seed_keys) == {"pitch_onset.seed", "pitch_frame.seed"}  # any family's params


@pytest.mark.parametrize("text, message", [
    ("params:\n  works.train.lrr: [0.1]\n", "unknown key works.train.lrr; allowed keys here: seed, device"),
    ("params:\n  works.train.lr: [0.001, -1]\n", r"works.train.lr=-1\)\: works.train.lr: Input should be greater than 0"),
    ("params:\n  works.train.lr: 0.001\n", "params.works.train.lr must be a non-empty list"),
    ("params:\n  pitch_transcribe.onset_threshold: [0.4, 0.5]\n", "no training stage reads pitch_transcribe"),
    ("params:\n  works.train.lr: [0.001]\nseeds: [1]\n", "unknown key.*seeds; allowed: params, seed_keys, name"),
])
def test_bad_grids_fail_before_queueing_naming_the_key(tmp_path: Path, params_copy: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_grid(_grid(tmp_path, text), params_copy)


@pytest.mark.parametrize("acc, loss, expected", [
    (0.02, -0.05, "still improving"), (0.0001, 0.0001, "converged"), (-0.02, 0.05, "overfitting"),
    (-0.02, -0.05, "decoupled"), (0.02, 0.05, "decoupled"), (0.0, -0.05, "loss only"), (0.0, 0.05, "overfitting"),
    (math.nan, 0.1, "too few epochs"),
])
def test_reading_of_accuracy_and_loss_slopes(acc: float, loss: float, expected: str) -> None:
    assert reading(acc, loss, loss_level=1.0, flat=0.002) == expected


def _log_run(point: str, seed: int, acc: list[float], loss: list[float], best: int) -> None:
    with mlflow.start_run(experiment_id=mlflow.set_experiment("musicid-works").experiment_id,
                          tags={TAG_STAGE: "works-train", TAG_TUNE: "sweep", TAG_POINT: point, TAG_SEED: str(seed)}):
        mlflow.log_param("deterministic", "True")
        for epoch, (a, l) in enumerate(zip(acc, loss), 1):
            mlflow.log_metrics({"val_mAP": a, "val_loss": l, "train_loss": 2 * l}, step=epoch)
        mlflow.log_metrics({"best_epoch": best})


def test_summary_reads_the_sweeps_runs_from_mlflow_means_spreads_slopes_and_readings(
        mlflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params_copy: Path) -> None:
    """Two points × two seeds logged as real MLflow runs: one still improving, one overfitting."""
    monkeypatch.chdir(tmp_path)
    configure()  # MLflow at $MLFLOW_TRACKING_URI, as every musicid command points it
    for seed, shift in ((0, 0.0), (1, 0.02)):
        _log_run("works.train.lr=0.001", seed, [0.3 + shift, 0.4 + shift, 0.5 + shift, 0.6 + shift],
                 [1.0, 0.9, 0.8, 0.7], best=4)
        _log_run("works.train.lr=0.01", seed, [0.6, 0.7 + shift, 0.6, 0.5], [0.5, 0.4, 0.6, 0.8], best=2)
    with mlflow.start_run(tags={TAG_STAGE: "works-train", TAG_TUNE: "other", TAG_POINT: "x=1", TAG_SEED: "0"}):
        mlflow.log_metric("val_mAP", 1.0, step=1)  # another sweep: not summarised
    groups = collect("sweep")
    assert [(g.point, len(g.seeds)) for g in groups] == [("works.train.lr=0.001", 2), ("works.train.lr=0.01", 2)]
    rows = summarise(groups, [], last=3, flat=0.002, params_path=params_copy)
    slow, fast = rows
    assert slow["val_mAP mean"] == pytest.approx(0.61) and slow["val_mAP std"] == pytest.approx(0.01)
    assert slow["val_mAP slope"] == pytest.approx(0.1) and slow["val_loss slope"] == pytest.approx(-0.1)
    assert slow["reading"] == "still improving" and fast["reading"] == "overfitting"
    assert fast["val_mAP mean"] == pytest.approx(0.71) and slow["seeds"] == 2 and slow["deterministic"] == "true"
    default_window = summarise(groups, [], last=None, flat=0.002, params_path=params_copy)[0]["last_n"]
    assert default_window == 10  # works.train.patience in params.yaml
    written = write_reports("sweep", rows, groups)
    assert {p.name for p in written} == {"summary.md", "summary.csv", "works-train-val_mAP.png", "works-train-val_loss.png"}
    assert len(list(csv.DictReader(open(written[1])))) == 2
    with pytest.raises(Exception, match="no per-epoch metric mAP; they log: train_loss, val_loss, val_mAP"):
        summarise(groups, ["mAP"], last=3, flat=0.002, params_path=params_copy)
    out = CliRunner().invoke(main, ["exp", "summary", "--tune", "sweep", "--last", "3", "--params", str(params_copy)])
    assert out.exit_code == 0, out.output
    assert "0.6100 ± 0.0100" in out.output and "still improving" in out.output and "overfitting" in out.output
    missing = CliRunner().invoke(main, ["exp", "summary", "--tune", "nothing", "--params", str(params_copy)])
    assert missing.exit_code == 2 and "no finished training runs tagged musicid.tune=nothing" in missing.output


def test_stratified_folds_keep_every_group_in_every_folds_training_part() -> None:
    rng = np.random.default_rng(0)
    groups = [f"w{int(g)}" for g in rng.integers(0, 12, 80)] + ["alone"]
    fold = stratified_folds(groups, 3, seed=0)
    assert fold[groups.index("alone")] == -1  # one performance: always trains
    assert (stratified_folds(["a", "b", "c", "d"], 2, seed=0, min_group=1) >= 0).all()  # lone recordings may be held out
    assert sorted(np.bincount(fold[fold >= 0])) [-1] - sorted(np.bincount(fold[fold >= 0]))[0] <= 1  # balanced
    for k in range(3):
        trained = {g for g, f in zip(groups, fold) if f != k}
        assert trained == set(groups), k  # every work seen by every fold's training part
    assert (stratified_folds(groups, 3, seed=0) == fold).all() and not (stratified_folds(groups, 3, seed=1) == fold).all()
    phases = plan_phases(3, lr=0.002, later_lr=0.0005, epochs=4, final_epochs=6)
    assert [(p.name, p.lr, p.epochs) for p in phases] == [("fold-1", 0.002, 4), ("fold-2", 0.0005, 4),
                                                           ("fold-3", 0.0005, 4), ("final", 0.0005, 6)]


def test_rank_epochs_per_test_set_and_by_average() -> None:
    rows = [{"phase": "fold-1", "epoch": 1, "a": 0.5, "b": 0.1, "elapsed_s": 1},
            {"phase": "fold-2", "epoch": 1, "a": 0.2, "b": 0.9, "elapsed_s": 2},
            {"phase": "final", "epoch": 1, "a": 0.4, "b": 0.4, "elapsed_s": 3}]
    ranked = rank_epochs(rows, ["a", "b"], top=2)
    assert [r["phase"] for r in ranked["a"]] == ["fold-1", "final"]
    assert [r["phase"] for r in ranked["b"]] == ["fold-2", "final"]
    assert [r["phase"] for r in ranked["average"]] == ["fold-2", "final"] and "average" not in rows[0]


def test_deterministic_switch_seeds_every_generator_and_turns_on_deterministic_algorithms() -> None:
    import random

    try:
        seed_everything(3, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        first = (random.random(), np.random.rand(), torch.rand(1).item())
        seed_everything(3, deterministic=True)
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    finally:
        torch.use_deterministic_algorithms(False)
    seed_everything(3, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()
