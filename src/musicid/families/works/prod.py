"""Production training of the work identifier (stage works-train-prod) on the spine's K-fold recipe.

Trains on everything but the held-out sets (`works.prod.holdout`: whole works never trained on):
the train store (every speed copy, the training-only synthetic works too) and the seen works'
held-out performances (val_seen, test_seen). Folds are by performance, stratified by work (a
performance's speed copies go with it; the synthetic works always train); each fold validates on
its own performances as a seen-works test set (queried against that fold's and the training
performances) and every phase scores the held-out sets every epoch, which the best-epoch report
ranks. The final run trains on everything and early-stops on `early_stop_on`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from musicid.config import WorksModelConfig, WorksProdConfig, WorksTrainConfig
from musicid.device import resolve_device
from musicid.families.works.evaluate import Performances
from musicid.families.works.features import SYNTHETIC_ROLE
from musicid.families.works.io import save_model
from musicid.families.works.model import WorkEncoder
from musicid.families.works.train import ChunkSampler, TrainingError, fit_encoder, spec_from_config
from musicid.fsutil import write_json
from musicid.store.ragged import RaggedStore
from musicid.training.determinism import seed_everything
from musicid.training.kfold import Phase, plan_phases, run_phases, stratified_folds, write_reports
from musicid.training.loop import LoopResult, finish, run_key, store_version

TRAINABLE = ("train", SYNTHETIC_ROLE, "val_seen", "test_seen")
FOLD_VAL = "val_seen"  # a fold's own performances are scored as a seen-works test set


def _rows(store: RaggedStore) -> list[tuple[str, str, str]]:
    return list(zip(store.column("track_id"), store.column("work_id"), store.column("role")))


def train_works_prod(
    shards: Path, model_cfg: WorksModelConfig, cfg: WorksTrainConfig, prod: WorksProdConfig, model_out: Path,
    report_dir: Path, state_root: Path, run: Any = None, progress: bool = True, deterministic: bool = False,
    on_epoch: Any = None,
) -> dict[str, Any]:
    """Run (or resume) every phase, save the final model, write history, best-epoch tables and curves."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, deterministic)
    stores = [RaggedStore(shards / f"{name}.zarr") for name in ("train", "val", "test")]
    features = stores[0].attrs["features"]
    trainable = [r for store in stores for r in _rows(store) if r[2] in TRAINABLE]
    folded = sorted({(track, work) for track, work, role in trainable if role != SYNTHETIC_ROLE})
    fold_of = dict(zip([t for t, _ in folded], stratified_folds([w for _, w in folded], prod.folds, prod.seed)))
    empty = [f"fold-{k + 1}" for k in range(prod.folds) if k not in fold_of.values()]
    if empty:
        raise TrainingError(f"{shards}: {', '.join(empty)} would hold no performance (works with ≥ 2 trainable "
                            "performances are folded); lower works.prod.folds")
    classes = sorted({work for _, work, _ in trainable})
    if len(classes) < 2:
        raise TrainingError(f"{shards}: {len(classes)} trainable work(s); need at least 2")
    spec = spec_from_config(model_cfg, features, len(classes), min(cfg.chunk_frames))
    every_epoch = cfg.model_copy(update={"eval_every": 1})
    perf = Performances.from_stores(stores, skip_roles=(SYNTHETIC_ROLE,))
    holdout = [name for name in prod.holdout if name in perf.roles]
    if prod.early_stop_on not in holdout:
        raise TrainingError(f"{shards}: no {prod.early_stop_on} performance to early-stop the final run on "
                            "(works.prod.early_stop_on; raise works.split's unseen shares)")
    state_dir = state_root / run_key(model_cfg, cfg, prod, deterministic, store_version(shards))

    def phase_data(phase: Phase) -> tuple[ChunkSampler, Performances, list[str]]:
        def trains(track: str) -> bool:
            return phase.is_final or fold_of.get(track, -1) != phase.index

        parts = [(store, [i for i, (track, _, role) in enumerate(_rows(store)) if role in TRAINABLE and trains(track)])
                 for store in stores]
        sampler = ChunkSampler(parts, cfg, int(features["bins_per_octave"]), classes=classes)
        roles = [role if role not in TRAINABLE else ("train" if trains(track) else FOLD_VAL)
                 for track, role in zip(perf.track_ids, perf.roles)]
        return sampler, Performances(perf.track_ids, perf.work_ids, roles, perf.frames), (
            [prod.early_stop_on] if phase.is_final else [FOLD_VAL])

    def train_phase(phase: Phase, init_state: dict | None, checkpoint_dir: Path, log_epoch: Any) -> tuple[torch.nn.Module, LoopResult]:
        sampler, phase_perf, val_names = phase_data(phase)
        print(f"works-train-prod: {phase.name}: {sum(len(p) for p in sampler.items_of)} training items, "
              f"validated on {val_names[0]} ({len(phase_perf.select((val_names[0],)))} performances), lr {phase.lr:g}")
        model, loop = fit_encoder(spec, every_epoch, sampler, phase_perf, val_names, holdout, checkpoint_dir, device,
                                  init_state=init_state, lr=phase.lr, epochs=phase.epochs, progress=progress,
                                  log_epoch=log_epoch, on_epoch=on_epoch, label=f"works-train-prod {phase.name}")
        return model, loop

    phases = plan_phases(prod.folds, cfg.lr, prod.later_lr, prod.epochs, prod.final_epochs)
    results, state = run_phases(phases, state_dir, train_phase, run, seed=cfg.seed)
    model = WorkEncoder(spec)
    model.load_state_dict(state)
    info = {"train": cfg.model_dump(), "prod": prod.model_dump(), "model_config": model_cfg.model_dump(),
            "data_version": state_dir.name, "classes": classes, "best_epoch": results[-1].best_epoch,
            "val_mAP": results[-1].best["val_mAP"], "phases": [r.name for r in results]}
    summary = {"signature": save_model(model, model_out, info), "folds": prod.folds, "holdout": holdout,
               "early_stop_on": prod.early_stop_on, "train_works": len(classes),
               "fold_performances": {f"fold-{k + 1}": int(sum(v == k for v in fold_of.values())) for k in range(prod.folds)},
               **write_reports(results, [f"mAP_{name}" for name in holdout], report_dir, selects="val_mAP")}
    write_json(report_dir / "metrics.json", summary)
    finish(state_dir)  # done: a rerun (new code, same params) trains again instead of restoring these phases
    return summary
