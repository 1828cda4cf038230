"""Production training of the fingerprinter (stage fingerprint-train-prod) on the spine's K-fold recipe.

Trains on the windows of every train and val track; the test split's tracks (only ever indexed and
queried) stay held out. Tracks are dealt into folds stratified by work; each fold validates on its
own tracks' windows (degraded segments searched among that fold's clean segments, as
fingerprint-train validates on the val store) and every phase scores the held-out test windows
(`top1_test`) every epoch. The final run trains on everything and early-stops on the test windows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicid.config import ModelConfig, ProdTrainConfig, TrainConfig
from musicid.device import resolve_device
from musicid.families.fingerprint.io import save_model
from musicid.families.fingerprint.model import Fingerprinter
from musicid.errors import MusicidError
from musicid.families.fingerprint.train import fit_fingerprinter, spec_from_config, validation_set
from musicid.fsutil import write_json
from musicid.store import open_store, read_targets, read_windows
from musicid.training.determinism import seed_everything
from musicid.training.kfold import Phase, plan_phases, run_phases, stratified_folds, write_reports
from musicid.training.loop import LoopResult, finish, run_key, store_version

HELD_OUT = "test"


class TrainingError(MusicidError):
    """The stores cannot make the folds asked for."""


def _tracks(store: Path) -> tuple[list[str], list[str]]:
    """(track id, work id) of every row of a window store."""
    attrs = open_store(store).attrs
    targets = read_targets(store, names=["track_index", "work_index"])
    return ([attrs["track_ids"][i] for i in targets["track_index"]], [attrs["work_ids"][i] for i in targets["work_index"]])


def train_fingerprinter_prod(
    shards: Path, model_cfg: ModelConfig, cfg: TrainConfig, prod: ProdTrainConfig, model_out: Path, report_dir: Path,
    state_root: Path, run: Any = None, progress: bool = True, deterministic: bool = False, on_epoch: Any = None,
) -> dict[str, Any]:
    """Run (or resume) every phase, save the final model, write history, best-epoch tables and curves."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, deterministic)
    stores = [shards / "train.zarr", shards / "val.zarr"]
    spec = spec_from_config(model_cfg, int(open_store(stores[0]).attrs["sample_rate"]))
    waves, row_tracks, works_of = [], [], {}
    for store in stores:
        track_ids, work_ids = _tracks(store)
        waves.append(read_windows(store))
        row_tracks += track_ids
        works_of |= dict(zip(track_ids, work_ids))
    wave, row_tracks = torch.from_numpy(np.concatenate(waves)), np.asarray(row_tracks)
    tracks = sorted(set(row_tracks))
    if len(tracks) < prod.folds:
        raise TrainingError(f"{shards}: {len(tracks)} train + val tracks cannot make {prod.folds} folds")
    fold_of = dict(zip(tracks, stratified_folds([works_of[t] for t in tracks], prod.folds, prod.seed, min_group=1)))
    row_fold = np.array([fold_of[t] for t in row_tracks])
    empty = [f"fold-{k + 1}" for k in range(prod.folds) if not (row_fold == k).any()]
    if empty:
        raise TrainingError(f"{shards}: {', '.join(empty)} would hold no track; lower fingerprint.prod.folds")
    held_out = validation_set(torch.from_numpy(read_windows(shards / "test.zarr")), spec, cfg, seed_offset=11)
    state_dir = state_root / run_key(model_cfg, cfg, prod, deterministic, store_version(shards))

    def train_phase(phase: Phase, init_state: dict | None, checkpoint_dir: Path, log_epoch: Any) -> tuple[torch.nn.Module, LoopResult]:
        trains = np.ones(len(row_fold), bool) if phase.is_final else row_fold != phase.index
        validation = held_out if phase.is_final else validation_set(wave[torch.from_numpy(~trains)], spec, cfg)
        print(f"fingerprint-train-prod: {phase.name}: {int(trains.sum())} training windows, validated on "
              f"{'the held-out test windows' if phase.is_final else f'{int((~trains).sum())} windows of its fold'}, "
              f"lr {phase.lr:g}")
        model, loop = fit_fingerprinter(spec, cfg, wave[torch.from_numpy(trains)].to(device), validation, checkpoint_dir,
                                        device, reports={HELD_OUT: held_out}, init_state=init_state, lr=phase.lr,
                                        epochs=phase.epochs, progress=progress, log_epoch=log_epoch, on_epoch=on_epoch,
                                        label=f"fingerprint-train-prod {phase.name}")
        return model, loop

    phases = plan_phases(prod.folds, cfg.lr, prod.later_lr, prod.epochs, prod.final_epochs)
    results, state = run_phases(phases, state_dir, train_phase, run, seed=cfg.seed)
    model = Fingerprinter(spec)
    model.load_state_dict(state)
    info = {"train": cfg.model_dump(), "prod": prod.model_dump(), "data_version": state_dir.name,
            "best_epoch": results[-1].best_epoch, "val_top1": results[-1].best["val_top1"],
            "phases": [r.name for r in results]}
    summary = {"signature": save_model(model, model_out, info), "folds": prod.folds, "holdout": [HELD_OUT],
               "train_tracks": len(tracks),
               "fold_tracks": {f"fold-{k + 1}": int(sum(v == k for v in fold_of.values())) for k in range(prod.folds)},
               **write_reports(results, [f"top1_{HELD_OUT}"], report_dir, selects="val_top1")}
    write_json(report_dir / "metrics.json", summary)
    finish(state_dir)  # done: a rerun (new code, same params) trains again instead of restoring these phases
    return summary
