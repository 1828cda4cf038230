"""Train one transcription network (onset or frame) on the labelled window stores, on the spine's loop.

Each batch takes half its windows from each set in `sets` (synthetic, chorales). Loss: BCE on the
network's target (`onset` or `frame`, per frame and pitch) with `pos_weight`, plus `conv_l2` / `fc_l2`.
Every epoch scores frame-level P/R/F1 at `threshold` on up to `eval_windows` windows of the train
and of the eval (val) split of every set, logged per epoch to MLflow; the best epoch is the one with
the highest eval F1 (ties: the lower eval BCE), chosen by the loop (no CSV sorting), and early
stopping waits `patience` epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from musicid.config import NoteNetConfig, PitchNotesConfig
from musicid.device import resolve_device
from musicid.families.pitch.metrics import prf
from musicid.families.pitch.notenet import NoteNet, NoteNetSpec
from musicid.fsutil import write_json
from musicid.models.io import save_model
from musicid.store import WindowDataset, open_store
from musicid.training import fit, run_key, store_version, write_history
from musicid.training.determinism import seed_everything
from musicid.training.distributed import current_world
from musicid.training.loop import LoopResult, TrainResult, finish

FAMILY = "pitch"
KINDS = ("onset", "frame")
SPLIT_NAMES = {"train": "train", "eval": "val"}  # the "eval" is the val split


class NoteTrainingError(RuntimeError):
    """Stores missing, empty or cut for another network (one line, naming the key)."""


def spec_from(kind: str, notes: PitchNotesConfig, cfg: NoteNetConfig) -> NoteNetSpec:
    return NoteNetSpec(kind=kind, sample_rate=notes.sample_rate, frame_hop=notes.frame_hop, n_fft=cfg.n_fft,
                       bins_per_semitone=cfg.bins_per_semitone, harmonics=list(cfg.harmonics), min_midi=notes.min_midi,
                       n_pitches=notes.n_pitches, channels=list(cfg.channels), lstm_hidden=cfg.lstm_hidden,
                       context_frames=cfg.context_frames, bidirectional=cfg.bidirectional)


def check_store(path: Path, spec: NoteNetSpec) -> None:
    attrs = open_store(path).attrs
    for key, want in (("sample_rate", spec.sample_rate), ("frame_hop", spec.frame_hop),
                      ("min_midi", spec.min_midi), ("n_pitches", spec.n_pitches)):
        if attrs.get(key) != want:
            raise NoteTrainingError(f"{path}: store has {key}={attrs.get(key)!r}, the network needs {want!r} "
                                    f"(pitch_notes.{key}); rerun pitch-notes-shards")


def frame_scores(probs: np.ndarray, target: np.ndarray, threshold: float) -> dict[str, float]:
    """Frame-level P/R/F1 over every (frame, pitch) cell: predicted = prob ≥ threshold."""
    pred, true = probs >= threshold, target > 0.5
    return prf(int((pred & true).sum()), int((pred & ~true).sum()), int((~pred & true).sum()))


@torch.inference_mode()
def predict_rows(model: NoteNet, ds: Any, rows: np.ndarray, device: torch.device, batch: int = 16) -> np.ndarray:
    out = []
    for start in range(0, len(rows), batch):
        x = ds.read_batch(rows[start : start + batch])["waveform"].to(device)
        out.append(torch.sigmoid(model(x)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,))


class RowPool:
    """Some rows of one or more stores of a set (a fold's share of its train and val stores), read as
    one sequence: what a network trains on, or is scored on, in one phase."""

    def __init__(self, parts: list[tuple[WindowDataset, np.ndarray]]) -> None:
        self.parts = [(ds, np.asarray(rows, dtype=np.int64)) for ds, rows in parts if len(rows)]
        self.starts = np.cumsum([0, *(len(rows) for _, rows in self.parts)])

    @classmethod
    def whole(cls, ds: WindowDataset) -> "RowPool":
        return cls([(ds, np.arange(len(ds), dtype=np.int64))])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read_batch(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        """Rows in caller order, one read per store."""
        index = np.asarray(index, dtype=np.int64)
        part = np.searchsorted(self.starts, index, side="right") - 1
        picked, batches = [], []
        for p, (ds, rows) in enumerate(self.parts):
            mine = np.flatnonzero(part == p)
            if len(mine):
                picked.append(mine)
                batches.append(ds.read_batch(rows[index[mine] - self.starts[p]]))
        if len(batches) == 1:
            return batches[0]
        back = torch.from_numpy(np.argsort(np.concatenate(picked), kind="stable"))
        return {k: torch.cat([b[k] for b in batches])[back] for k in batches[0]}


def scored_rows(pool: RowPool, n: int) -> np.ndarray:
    """Up to `n` rows spread evenly over the pool (a track's windows are consecutive: the first rows
    would be one track only)."""
    return np.unique(np.linspace(0, len(pool) - 1, min(n, len(pool))).astype(np.int64))


def open_sets(kind: str, shards: Path, notes: PitchNotesConfig, cfg: NoteNetConfig,
              splits: tuple[str, ...] = ("train", "val")) -> tuple[NoteNetSpec, dict[str, dict[str, WindowDataset]]]:
    """The network's spec and its labelled stores ({split: {set: dataset}}), refused in one line when
    missing, empty or cut for another network."""
    if kind not in KINDS:
        raise NoteTrainingError(f"network kind {kind!r}: allowed {', '.join(KINDS)}")
    spec = spec_from(kind, notes, cfg)
    paths = {split: {s: shards / f"{s}-{split}.zarr" for s in cfg.sets} for split in splits}
    missing = [str(p) for d in paths.values() for p in d.values() if not p.exists()]
    if missing:
        raise NoteTrainingError(f"missing labelled store(s) {', '.join(missing)}: add the source to pitch_notes.sources "
                                f"or drop it from pitch_{kind}.sets")
    for d in paths.values():
        for p in d.values():
            check_store(p, spec)
    data = {split: {s: WindowDataset(p, targets=[kind], target_cache_mb=512) for s, p in d.items()} for split, d in paths.items()}
    empty = [str(paths[split][s]) for split, by in data.items() for s, ds in by.items() if not len(ds)]
    if empty:
        raise NoteTrainingError(f"empty labelled store(s) {', '.join(empty)}: raise pitch_notes.synthetic.works / "
                                f"chorales.pieces or drop the set from pitch_{kind}.sets")
    return spec, data


def fit_notenet(
    spec: NoteNetSpec, cfg: NoteNetConfig, train: dict[str, RowPool], scored: dict[str, dict[str, RowPool]],
    checkpoint_dir: Path, device: torch.device, *, init_state: dict | None = None, lr: float | None = None,
    epochs: int | None = None, progress: bool = True, log_epoch: Callable | None = None,
    on_epoch: Callable | None = None, label: str = "",
) -> tuple[NoteNet, LoopResult]:
    """One training run of a network on the `train` pools (half of each batch from each set); resumes
    from `checkpoint_dir`.

    Every epoch scores each named group of pools in `scored` ({name}_{set}_f1 and pooled
    {name}_precision / _recall / _f1 / _loss): "train" and "eval" always, "eval" choosing the best
    epoch, more (held-out test pools) where production training asks. `init_state` starts from other
    weights; `lr` and `epochs` override the config's (production training's later phases).
    """
    kind = spec.kind
    lr, epochs = lr or cfg.lr, epochs or cfg.epochs
    model = NoteNet(spec).to(device)
    if init_state is not None:
        model.load_state_dict(init_state)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * cfg.steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)
    per_set = max(1, cfg.batch_size // len(train))
    pos_weight = torch.tensor(cfg.pos_weight, device=device)
    rows_of = {name: {s: scored_rows(pool, cfg.eval_windows) for s, pool in by.items()} for name, by in scored.items()}

    world = current_world()  # DDP: each rank reads and learns from its share of the rows
    world.check_divides(*cfg.ddp_batch(f"pitch_{kind}"))
    net = world.wrap(model, device=device)

    def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = net(batch["waveform"].to(device))
        target = batch[kind].to(device).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
        conv_l2, fc_l2 = model.l2_terms()
        return loss + cfg.conv_l2 * conv_l2 + cfg.fc_l2 * fc_l2

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for pool in train.values():
            rows = world.share(torch.randint(0, len(pool), (per_set,), generator=gen).numpy())
            loss = loss_of(pool.read_batch(rows)) / len(train)
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        return total

    def validate(epoch: int) -> dict[str, float]:
        model.eval()
        row: dict[str, float] = {}
        for name, by in scored.items():
            probs, targets = [], []
            for s, pool in by.items():
                rows = rows_of[name][s]
                p = predict_rows(model, pool, rows, device)
                t = pool.read_batch(rows)[kind].numpy()
                row[f"{name}_{s}_f1"] = frame_scores(p, t, cfg.threshold)["f1"]
                probs.append(p.reshape(-1, spec.n_pitches)), targets.append(t.reshape(-1, spec.n_pitches))
            p_all, t_all = np.concatenate(probs), np.concatenate(targets) > 0.5
            pooled = frame_scores(p_all, t_all, cfg.threshold)
            row.update({f"{name}_{k}": float(pooled[k]) for k in ("precision", "recall", "f1")})
            clipped = np.clip(p_all, 1e-6, 1 - 1e-6)  # unweighted BCE: breaks ties between epochs of equal F1
            row[f"{name}_loss"] = float(-np.mean(np.where(t_all, np.log(clipped), np.log(1 - clipped))))
        model.train()
        return row

    def better(row: dict[str, float], best: dict[str, float] | None) -> bool:
        if best is None or row["eval_f1"] > best["eval_f1"] + 1e-9:
            return True
        return abs(row["eval_f1"] - best["eval_f1"]) <= 1e-9 and row["eval_loss"] < best["eval_loss"]

    loop = fit(model, optimizer, scheduler, gen, epochs=epochs, steps_per_epoch=cfg.steps_per_epoch,
               patience=cfg.patience, checkpoint_dir=checkpoint_dir, step=step, validate=validate, better=better,
               log_epoch=log_epoch, on_epoch=on_epoch, progress=progress, label=label or f"pitch-{kind}-train",
               monitor="eval F1",
               describe=lambda r: f"loss {r['train_loss']:.4f}, train F1 {r['train_f1']:.3f}, eval P/R/F1 "
                                  f"{r['eval_precision']:.3f}/{r['eval_recall']:.3f}/{r['eval_f1']:.3f}"
                                  + "".join(f", {k} {v:.3f}" for k, v in r.items() if k.startswith("test_") and k.endswith("f1")))
    return model, loop


def train_notenet(
    kind: str, shards: Path, notes: PitchNotesConfig, cfg: NoteNetConfig, model_out: Path, report_dir: Path,
    checkpoint_root: Path, progress: bool = True, log_epoch: Callable | None = None, on_epoch: Callable | None = None,
    deterministic: bool = False,
) -> TrainResult:
    """Stage pitch-<kind>-train: the network on every train window, best epoch by the val windows."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, deterministic)
    spec, data = open_sets(kind, shards, notes, cfg)
    key = run_key(kind, notes, cfg, *(store_version(shards / f"{s}-{split}.zarr") for s in cfg.sets for split in ("train", "val")))
    checkpoint_dir = checkpoint_root / key
    pools = {name: {s: RowPool.whole(ds) for s, ds in data[split].items()} for name, split in SPLIT_NAMES.items()}
    model, loop = fit_notenet(spec, cfg, pools["train"], pools, checkpoint_dir, device, progress=progress,
                              log_epoch=log_epoch, on_epoch=on_epoch)
    result = TrainResult.from_loop(loop)
    info = {"train": cfg.model_dump(), "notes": notes.model_dump(), "data_version": key, "kind": kind,
            "best_epoch": result.best_epoch, "epochs_run": len(result.history), "threshold": cfg.threshold,
            "eval_f1": result.best.get("eval_f1", 0.0)}
    result.signature = save_model(model.cpu(), spec.to_dict(), FAMILY, model_out, info)
    report_dir.mkdir(parents=True, exist_ok=True)
    write_history(report_dir / "history.csv", result.history)
    write_json(report_dir / "metrics.json", {
        "kind": kind, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
        "stopped_early": result.stopped_early, "signature": result.signature, "threshold": cfg.threshold,
        **{k: v for k, v in result.best.items() if k != "epoch"},
        "train_windows": {s: len(ds) for s, ds in data["train"].items()},
    })
    plot_history(result.history, report_dir / "curves.png", kind)
    finish(checkpoint_dir)
    return result


def plot_history(history: list[dict[str, Any]], out_png: Path, kind: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=110)
    left.plot(epochs, [r["train_loss"] for r in history], marker="o")
    left.set_xlabel("epoch"), left.set_ylabel(f"train loss (BCE on {kind})")
    for key, style in (("train_f1", "o--"), ("eval_f1", "s-"), ("eval_precision", ":"), ("eval_recall", ":")):
        right.plot(epochs, [r[key] for r in history], style, label=key.replace("_", " "))
    right.set_xlabel("epoch"), right.set_ylabel(f"frame-level {kind} F1"), right.set_ylim(0, 1), right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
