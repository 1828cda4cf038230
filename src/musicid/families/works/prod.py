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

import numpy as np
import torch

from musicid.config import ProdTrainConfig, WorksModelConfig, WorksTrainConfig
from musicid.device import resolve_device
from musicid.families.works.evaluate import Performances
from musicid.families.works.features import SYNTHETIC_ROLE
from musicid.families.works.io import save_model
from musicid.families.works.model import WorkEncoder
from musicid.families.works.train import ChunkSampler, TrainingError, fit_encoder, spec_from_config
from musicid.fsutil import write_json
from musicid.store.ragged import RaggedStore
from musicid.tracking.runs import StageRun
from musicid.training.determinism import seed_everything
from musicid.training.kfold import (
    Phase, PhaseResult, epoch_table, format_best_epochs, plan_phases, rank_epochs, run_phases, stratified_folds,
)
from musicid.training.loop import run_key, store_version, write_history

TAG_PHASE = "musicid.phase"  # on each nested run: fold-1 … fold-K, final
TRAINABLE = ("train", SYNTHETIC_ROLE, "val_seen", "test_seen")
FOLD_VAL = "val_seen"  # a fold's own performances are scored as a seen-works test set


def _rows(store: RaggedStore) -> list[tuple[str, str, str]]:
    return list(zip(store.column("track_id"), store.column("work_id"), store.column("role")))


def train_works_prod(
    shards: Path, model_cfg: WorksModelConfig, cfg: WorksTrainConfig, prod: ProdTrainConfig, model_out: Path,
    report_dir: Path, state_root: Path, run: Any = None, progress: bool = True, deterministic: bool = False,
    on_epoch: Any = None,
) -> dict[str, Any]:
    """Run (or resume) every phase, save the final model, write history, best-epoch tables and curves."""
    run = run if run is not None else StageRun(None)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, deterministic)
    stores = [RaggedStore(shards / f"{name}.zarr") for name in ("train", "val", "test")]
    features = stores[0].attrs["features"]
    trainable = [r for store in stores for r in _rows(store) if r[2] in TRAINABLE]
    folded = sorted({(track, work) for track, work, role in trainable if role != SYNTHETIC_ROLE})
    fold_of = dict(zip([t for t, _ in folded], stratified_folds([w for _, w in folded], prod.folds, prod.seed)))
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

    def train_phase(phase: Phase, init_state: dict | None, checkpoint_dir: Path) -> tuple[dict, Any]:
        sampler, phase_perf, val_names = phase_data(phase)
        torch.manual_seed(cfg.seed + phase.index)  # each phase's draws independent of how earlier ones ran (resume)
        print(f"works-train-prod: {phase.name}: {sum(len(p) for p in sampler.items_of)} training items, "
              f"validated on {val_names[0]} ({len(phase_perf.select((val_names[0],)))} performances), lr {phase.lr:g}")
        with run.child(phase.name, {TAG_PHASE: phase.name}) as child:
            model, loop = fit_encoder(spec, every_epoch, sampler, phase_perf, val_names, holdout, checkpoint_dir, device,
                                      init_state=init_state, lr=phase.lr, epochs=phase.epochs, progress=progress,
                                      log_epoch=child.log_epoch, on_epoch=on_epoch, label=f"works-train-prod {phase.name}")
            child.log_metrics({"best_epoch": loop.best_epoch, "best_val_mAP": loop.best["val_mAP"]})
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}, loop

    def restored(phase: Phase, result: PhaseResult) -> None:
        if result.resumed:  # a finished phase of an interrupted run: its nested run again, from the record
            with run.child(phase.name, {TAG_PHASE: phase.name}) as child:
                for row in result.history:
                    child.log_epoch(row)
                child.log_metrics({"best_epoch": result.best_epoch, "best_val_mAP": result.best["val_mAP"]})

    phases = plan_phases(prod.folds, cfg.lr, prod.later_lr, prod.epochs, prod.final_epochs)
    results, state = run_phases(phases, state_dir, train_phase, restored)
    model = WorkEncoder(spec)
    model.load_state_dict(state)
    final = results[-1]
    info = {"train": cfg.model_dump(), "prod": prod.model_dump(), "model_config": model_cfg.model_dump(),
            "data_version": state_dir.name, "classes": classes, "best_epoch": final.best_epoch,
            "val_mAP": final.best["val_mAP"], "phases": [r.name for r in results]}
    signature = save_model(model, model_out, info)
    metrics = [f"mAP_{name}" for name in holdout]
    rows = epoch_table(results)
    report_dir.mkdir(parents=True, exist_ok=True)
    fields = ["phase", "epoch", "train_loss", "val_loss", "val_mAP", *metrics, "lr", "seconds", "elapsed_s"]
    write_history(report_dir / "history.csv", rows, fields)
    ranked = rank_epochs(rows, metrics)
    (report_dir / "best-epochs.md").write_text(format_best_epochs(ranked, metrics))
    summary = {
        "signature": signature, "folds": prod.folds, "holdout": holdout, "early_stop_on": prod.early_stop_on,
        "train_works": len(classes), "fold_performances": {f"fold-{k + 1}": int(sum(v == k for v in fold_of.values()))
                                                          for k in range(prod.folds)},
        "phases": {r.name: {"best_epoch": r.best_epoch, "epochs_run": len(r.history), "seconds": round(r.seconds, 1),
                            **{k: r.best[k] for k in ("val_mAP", *metrics) if k in r.best}} for r in results},
        "final": {k: final.best[k] for k in ("val_mAP", *metrics) if k in final.best},
        "best_epochs": {k: [{c: r[c] for c in ("phase", "epoch", "elapsed_s", *metrics, "average") if c in r} for r in v]
                        for k, v in ranked.items()},
    }
    write_json(report_dir / "metrics.json", summary)
    plot_phases(rows, metrics, report_dir / "curves.png")
    return summary


def plot_phases(rows: list[dict[str, Any]], metrics: list[str], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.4), dpi=110)
    x = np.arange(1, len(rows) + 1)
    for metric in ["val_mAP", *metrics]:
        ax.plot(x, [float(r.get(metric) or np.nan) for r in rows], marker=".", label=metric)
    starts = [i for i, r in enumerate(rows) if i == 0 or r["phase"] != rows[i - 1]["phase"]]
    for i in starts:
        ax.axvline(i + 0.5, color="grey", lw=0.6)
        ax.text(i + 0.7, 0.02, rows[i]["phase"], fontsize=7, color="grey")
    ax.set_xlabel("epoch (all phases in order)"), ax.set_ylabel("mAP"), ax.set_ylim(0, 1), ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
