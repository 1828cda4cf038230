"""Production training of the transcriber (stage pitch-train-prod) on the spine's K-fold recipe.

Each network named in `pitch_prod.networks` (onset, frame) trains on the windows of every train and
val track of its sets; the test tracks (the pieces pitch-transcribe-evaluate scores) stay held out.
Per set, tracks are dealt into folds stratified by piece (a piece's renderings spread over the
folds); each fold validates on its own tracks' windows, and every phase scores the held-out test
windows of every set every epoch (`test_<set>_f1`), which the best-epoch report ranks. The final
run trains on everything and early-stops on the test windows of `early_stop_on`.

Output: `models/pitch-prod/<network>/` (each loads as its stage model does) and per network a
history, best-epoch table and curves under `reports/pitch/train-prod/<network>/`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from musicid.config import NoteNetConfig, PitchNotesConfig, PitchProdConfig
from musicid.device import resolve_device
from musicid.families.pitch.labelled import read_tracks
from musicid.families.pitch.notenet import NoteNet
from musicid.families.pitch.notetrain import FAMILY, NoteTrainingError, RowPool, fit_notenet, open_sets
from musicid.fsutil import write_json
from musicid.models.io import save_model
from musicid.store import open_store, read_targets
from musicid.training.determinism import seed_everything
from musicid.training.kfold import Phase, plan_phases, run_phases, stratified_folds, write_reports
from musicid.training.loop import LoopResult, finish, run_key, store_version

TRAINABLE = ("train", "val")
HELD_OUT = "test"


def heldout_metrics(sets: list[str]) -> list[str]:
    """The per-epoch held-out figures of a network trained on `sets`."""
    return [f"{HELD_OUT}_{s}_f1" for s in sets]


def _row_tracks(store: Path) -> np.ndarray:
    """Track name of every window of a labelled store."""
    names = open_store(store).attrs["track_names"]
    return np.asarray([names[i] for i in read_targets(store, names=["track"])["track"]], dtype=object)


def _deal(tracks: list[str], pieces: dict[str, str], prod: PitchProdConfig, source: str) -> dict[str, int]:
    """Track → fold for one set, stratified by piece; every track validates in exactly one fold."""
    if len(tracks) < prod.folds:
        raise NoteTrainingError(f"set {source}: {len(tracks)} train + val track(s) cannot make {prod.folds} folds; "
                                f"lower pitch_prod.folds or raise pitch_notes.{source}'s pieces / works")
    unknown = [t for t in tracks if t not in pieces]
    if unknown:
        raise NoteTrainingError(f"set {source}: track {unknown[0]} is not in its tracks.csv; rerun pitch-notes-render")
    return dict(zip(tracks, (int(f) for f in stratified_folds([pieces[t] for t in tracks], prod.folds, prod.seed,
                                                            min_group=1))))


def train_network_prod(
    kind: str, shards: Path, labelled: Path, notes: PitchNotesConfig, cfg: NoteNetConfig, prod: PitchProdConfig,
    model_out: Path, report_dir: Path, state_root: Path, run: Any = None, progress: bool = True,
    deterministic: bool = False, on_epoch: Any = None,
) -> tuple[dict[str, Any], Path]:
    """Run (or resume) one network's phases; save its final model; write its history, best epochs,
    curves. Returns its summary and its state folder (kept until every network is done)."""
    if prod.early_stop_on not in cfg.sets:
        raise NoteTrainingError(f"pitch_prod.early_stop_on {prod.early_stop_on!r} is not among pitch_{kind}.sets "
                                f"{cfg.sets}: allowed {', '.join(cfg.sets)}")
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, deterministic)
    spec, data = open_sets(kind, shards, notes, cfg, splits=(*TRAINABLE, HELD_OUT))
    row_tracks = {s: {split: _row_tracks(shards / f"{s}-{split}.zarr") for split in TRAINABLE} for s in cfg.sets}
    fold_of: dict[str, dict[str, int]] = {}
    for s in cfg.sets:
        pieces = {t["track"]: t["piece"] for t in read_tracks(labelled / s)}
        tracks = sorted({t for split in TRAINABLE for t in row_tracks[s][split]})
        fold_of[s] = _deal(tracks, pieces, prod, s)
    row_fold = {s: {split: np.array([fold_of[s][t] for t in row_tracks[s][split]]) for split in TRAINABLE}
                for s in cfg.sets}
    held_out = {s: RowPool.whole(data[HELD_OUT][s]) for s in cfg.sets}
    versions = [store_version(shards / f"{s}-{split}.zarr") for s in cfg.sets for split in (*TRAINABLE, HELD_OUT)]
    state_dir = state_root / kind / run_key(kind, notes, cfg, prod, deterministic, *versions)

    def pool(s: str, keep: Any) -> RowPool:
        return RowPool([(data[split][s], np.flatnonzero(keep(row_fold[s][split]))) for split in TRAINABLE])

    def train_phase(phase: Phase, init_state: dict | None, checkpoint_dir: Path, log_epoch: Any) -> tuple[NoteNet, LoopResult]:
        if phase.is_final:
            train = {s: pool(s, lambda folds: np.ones(len(folds), bool)) for s in cfg.sets}
            evaluate = {prod.early_stop_on: held_out[prod.early_stop_on]}
        else:
            train = {s: pool(s, lambda folds: folds != phase.index) for s in cfg.sets}
            evaluate = {s: pool(s, lambda folds: folds == phase.index) for s in cfg.sets}
        print(f"pitch-train-prod: {kind} {phase.name}: " + ", ".join(f"{s} {len(p)}" for s, p in train.items())
              + f" training windows, validated on {f'the {prod.early_stop_on} test windows' if phase.is_final else 'its fold'}"
              + f" ({sum(len(p) for p in evaluate.values())} windows), lr {phase.lr:g}")
        return fit_notenet(spec, cfg, train, {"train": train, "eval": evaluate, HELD_OUT: held_out}, checkpoint_dir,
                           device, init_state=init_state, lr=phase.lr, epochs=phase.epochs, progress=progress,
                           log_epoch=log_epoch, on_epoch=on_epoch, label=f"pitch-train-prod {kind} {phase.name}")

    phases = plan_phases(prod.folds, cfg.lr, prod.later_lr, prod.epochs, prod.final_epochs)
    results, state = run_phases(phases, state_dir, train_phase, run, seed=cfg.seed, network=kind)
    model = NoteNet(spec)
    model.load_state_dict(state)
    final = results[-1]
    info = {"train": cfg.model_dump(), "notes": notes.model_dump(), "prod": prod.model_dump(), "kind": kind,
            "data_version": state_dir.name, "best_epoch": final.best_epoch, "threshold": cfg.threshold,
            "eval_f1": final.best.get("eval_f1", 0.0), "phases": [r.name for r in results]}
    summary = {"signature": save_model(model, spec.to_dict(), FAMILY, model_out, info),
               "train_tracks": {s: len(folds) for s, folds in fold_of.items()},
               "fold_tracks": {s: {f"fold-{k + 1}": sum(v == k for v in folds.values()) for k in range(prod.folds)}
                               for s, folds in fold_of.items()},
               **write_reports(results, heldout_metrics(cfg.sets), report_dir, selects="eval_f1", network=kind)}
    return summary, state_dir


def train_transcriber_prod(
    shards: Path, labelled: Path, notes: PitchNotesConfig, networks: dict[str, NoteNetConfig], prod: PitchProdConfig,
    model_out: Path, report_dir: Path, state_root: Path, run: Any = None, progress: bool = True,
    deterministic: bool = False, on_epoch: Any = None,
) -> dict[str, Any]:
    """Every network of `prod.networks` in turn; a rerun restores the finished ones' phases and
    resumes the first unfinished one."""
    per_network, states = {}, []
    for kind in prod.networks:
        per_network[kind], state = train_network_prod(kind, shards, labelled, notes, networks[kind], prod,
                                                      model_out / kind, report_dir / kind, state_root, run, progress,
                                                      deterministic, on_epoch)
        states.append(state)
    signatures = [per_network[kind]["signature"] for kind in prod.networks]
    summary = {"signature": hashlib.sha256("+".join(signatures).encode()).hexdigest()[:16], "folds": prod.folds,
               "holdout": [HELD_OUT], "early_stop_on": prod.early_stop_on, "networks": per_network,
               "final": {f"{kind}_{k}": v for kind, s in per_network.items() for k, v in s["final"].items()}}
    write_json(report_dir / "metrics.json", summary)
    for state in states:
        finish(state)  # done: a rerun (new code, same params) trains again instead of restoring these phases
    return summary
