"""Train the work identifier on the train feature store; select by validation mAP.

Validation mAP is the mean over the validation sets present (unseen val works and seen works'
held-out val performances), steadier than either alone on a small catalog. A step draws `works_per_batch` training works × `per_work` chunks (an m-per-class sampler: every
work in the batch has positives for the triplet term), each a random crop of `chunk_frames[s]`
CQT frames (a seeded draw among the lengths per step), pitch-rolled and erased at random, and minimises
focal + triplet + center loss. After every epoch the validation mAP picks the best epoch and drives early stopping; every
`eval_every` epochs the named test sets are scored too and logged as `mAP_<testset>` (reported,
never used to choose). The spine's loop (musicid.training) checkpoints and resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from musicid.config import WorksEvaluateConfig, WorksModelConfig, WorksTrainConfig
from musicid.device import resolve_device
from musicid.errors import MusicidError
from musicid.families.works.augment import random_erase, roll_pitch
from musicid.families.works.evaluate import TESTSETS, Performances, embed_frames, evaluate_testsets
from musicid.families.works.io import save_model
from musicid.families.works.losses import CenterLoss, batch_hard_triplet, focal_loss
from musicid.families.works.model import WorkEncoder, WorkSpec
from musicid.fsutil import write_json
from musicid.store.ragged import RaggedStore
from musicid.training.loop import TrainResult, finish, fit, run_key, store_version, write_history

IN_MEMORY_BYTES = 2 << 30  # feature stores up to this are read into memory once


class TrainingError(MusicidError):
    """The training data cannot train a work identifier as configured."""


def spec_from_config(cfg: WorksModelConfig, features: dict[str, Any], n_classes: int, min_frames: int) -> WorkSpec:
    return WorkSpec(
        n_bins=int(features["n_bins"]), bins_per_octave=int(features["bins_per_octave"]),
        fmin_hz=float(features["fmin_hz"]), sample_rate=int(features["sample_rate"]), hop_s=float(features["hop_s"]),
        backbone=cfg.backbone, embedding_dim=cfg.embedding_dim, dim=cfg.dim, conformer_layers=cfg.conformer_layers,
        conformer_heads=cfg.conformer_heads, conformer_ffn=cfg.conformer_ffn, conformer_kernel=cfg.conformer_kernel,
        cqtnet_channels=tuple(cfg.cqtnet_channels), dropout=cfg.dropout, n_classes=n_classes, min_frames=min_frames,
        key_normalize=cfg.key_normalize,
    )


class ChunkSampler:
    """m-per-class batches of random CQT crops from the train store (all speeds)."""

    def __init__(self, store: RaggedStore, cfg: WorksTrainConfig, bins_per_octave: int) -> None:
        self.store, self.cfg, self.bins_per_octave = store, cfg, bins_per_octave
        works = store.column("work_id")
        self.classes = sorted(set(works))
        self.label = {w: i for i, w in enumerate(self.classes)}
        self.items_of: list[list[int]] = [[] for _ in self.classes]
        for i, work in enumerate(works):
            self.items_of[self.label[work]].append(i)
        in_memory = store.attrs["frames"] * store.attrs["width"] * 4 <= IN_MEMORY_BYTES
        self.cached = store.load_all() if in_memory else None
        self.lengths = [store.length(i) for i in range(len(store))]

    def _crop(self, i: int, frames: int, gen: torch.Generator) -> torch.Tensor:
        length = self.lengths[i]
        start = int(torch.randint(0, max(1, length - frames + 1), (1,), generator=gen))
        item = self.cached[i][start : start + frames] if self.cached is not None else self.store.item(i, start, start + frames)
        x = torch.from_numpy(np.asarray(item, dtype=np.float32))
        if len(x) < frames:
            x = torch.nn.functional.pad(x, (0, 0, 0, frames - len(x)))
        cfg = self.cfg
        if float(torch.rand(1, generator=gen)) < cfg.roll_prob:
            x = roll_pitch(x, cfg.roll_method, cfg.max_roll_bins, gen, self.bins_per_octave)
        if float(torch.rand(1, generator=gen)) < cfg.erase_prob:
            x = random_erase(x, gen)
        return x

    def sample(self, frames: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        n_works = min(cfg.works_per_batch, len(self.classes))
        chosen = torch.randperm(len(self.classes), generator=gen)[:n_works].tolist()
        chunks, labels = [], []
        for label in chosen:
            pool = self.items_of[label]
            picks = torch.randint(0, len(pool), (cfg.per_work,), generator=gen).tolist()
            for pick in picks:
                chunks.append(self._crop(pool[pick], frames, gen))
                labels.append(label)
        return torch.stack(chunks), torch.tensor(labels)


def plot_history(history: list[dict[str, float]], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=110)
    left.plot(epochs, [r["train_loss"] for r in history], marker="o")
    left.set_xlabel("epoch"), left.set_ylabel("train loss (focal + triplet + center)")
    right.plot(epochs, [r["val_mAP"] for r in history], marker="o", label="val mAP (selects)")
    for key in sorted({k for r in history for k in r if k.startswith("mAP_")}):
        points = [(r["epoch"], r[key]) for r in history if r.get(key) not in (None, "")]
        right.plot([p[0] for p in points], [p[1] for p in points], marker="s", linestyle="--", label=key)
    right.set_xlabel("epoch"), right.set_ylabel("mAP"), right.set_ylim(0, 1), right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def train_works(
    shards: Path, model_cfg: WorksModelConfig, cfg: WorksTrainConfig, eval_cfg: WorksEvaluateConfig, model_out: Path,
    report_dir: Path, checkpoint_root: Path, progress: bool = True, log_epoch: Callable | None = None,
    on_epoch: Callable | None = None, init_model: Path | None = None,
) -> TrainResult:
    """Train, checkpoint every epoch, stop early, write the best model, history, metrics and curves.

    `init_model` starts from another works model's weights (fine-tuning; its classifier is replaced
    when the training works differ).
    """
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    train_store = RaggedStore(shards / "train.zarr")
    val_store, test_store = RaggedStore(shards / "val.zarr"), RaggedStore(shards / "test.zarr")
    features = train_store.attrs["features"]
    sampler = ChunkSampler(train_store, cfg, int(features["bins_per_octave"]))
    if len(sampler.classes) < 2:
        raise TrainingError(f"{shards}/train.zarr holds {len(sampler.classes)} work(s); need at least 2 to train")
    spec = spec_from_config(model_cfg, features, len(sampler.classes), min(cfg.chunk_frames))
    model = WorkEncoder(spec)
    if init_model is not None:
        from musicid.families.works.io import load_model

        start = load_model(init_model, "cpu").model.state_dict()
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in start.items() if k in own and own[k].shape == v.shape}, strict=False)
    model = model.to(device)
    center = CenterLoss(len(sampler.classes), spec.embedding_dim).to(device)
    params = list(model.parameters()) + list(center.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: max(cfg.min_lr / cfg.lr, cfg.lr_decay ** e))

    perf = Performances.from_stores([train_store, val_store, test_store])
    val_names = [n for n in ("val_unseen", "val_seen") if len(perf.select((n,)))]
    if not val_names:
        raise TrainingError(f"{shards}/val.zarr holds no validation performance; raise works.split.val_* shares")
    gen = torch.Generator().manual_seed(cfg.seed)
    key = run_key(model_cfg, cfg, eval_cfg.testsets, str(init_model or ""), store_version(shards))
    checkpoint_dir = checkpoint_root / key

    def step() -> float:
        frames = cfg.chunk_frames[int(torch.randint(0, len(cfg.chunk_frames), (1,), generator=gen))]
        x, labels = sampler.sample(frames, gen)
        x, labels = x.to(device), labels.to(device)
        raw = model.embed_raw(x)
        emb = torch.nn.functional.normalize(raw, dim=-1)
        loss = (cfg.focal_weight * focal_loss(model.logits(raw), labels, cfg.focal_gamma)
                + cfg.triplet_weight * batch_hard_triplet(emb, labels, cfg.triplet_margin)
                + cfg.center_weight * center(emb, labels))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        return float(loss.detach())

    def validate(epoch: int) -> dict[str, float]:
        wanted = set(val_names) | (set(eval_cfg.testsets) if epoch % cfg.eval_every == 0 or epoch == cfg.epochs else set())
        needed = perf.select(tuple({role for name in wanted for side in TESTSETS[name] for role in side}))
        embeddings = np.zeros((len(perf.frames), spec.embedding_dim), dtype=np.float32)  # only what is scored
        embeddings[needed] = embed_frames(model, [perf.frames[i] for i in needed], device, spec.min_frames)
        results = evaluate_testsets(sorted(wanted), perf, embeddings)
        row = {"val_mAP": float(np.mean([results[name]["mAP"] for name in val_names]))}
        row |= {f"mAP_{name}": float(m["mAP"]) for name, m in results.items() if m.get("mAP") is not None}
        row |= {f"MR1_{name}": float(m["MR1"]) for name, m in results.items() if m.get("MR1") is not None}
        return row

    def better(row: dict[str, float], best: dict[str, float] | None) -> bool:
        return best is None or row["val_mAP"] > best["val_mAP"] + 1e-6

    loop = fit(
        model, optimizer, scheduler, gen, epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch, patience=cfg.patience,
        checkpoint_dir=checkpoint_dir, step=step, validate=validate, better=better,
        end_epoch=lambda epoch: scheduler.step(), log_epoch=log_epoch, on_epoch=on_epoch, progress=progress,
        describe=lambda r: f"loss {r['train_loss']:.3f}, val mAP {r['val_mAP']:.3f}"
        + "".join(f", {k} {v:.3f}" for k, v in r.items() if k.startswith("mAP_")),
        label="works-train", monitor="val mAP",
    )
    result = TrainResult.from_loop(loop)
    info = {"train": cfg.model_dump(), "model_config": model_cfg.model_dump(), "data_version": key,
            "classes": sampler.classes, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
            "val_mAP": result.best["val_mAP"], "init_model": str(init_model or "")}
    result.signature = save_model(model.cpu(), model_out, info)
    report_dir.mkdir(parents=True, exist_ok=True)
    fields = ["epoch", "train_loss", "val_mAP", *sorted({k for r in result.history for k in r
                                                          if k.startswith(("mAP_", "MR1_"))}), "lr", "seconds"]
    write_history(report_dir / "history.csv", result.history, fields)
    write_json(report_dir / "metrics.json", {
        "best_epoch": result.best_epoch, "epochs_run": len(result.history), "stopped_early": result.stopped_early,
        "val_mAP": result.best["val_mAP"], "validated_on": " + ".join(val_names), "signature": result.signature,
        "train_works": len(sampler.classes), "train_items": len(train_store),
    })
    plot_history(result.history, report_dir / "curves.png")
    finish(checkpoint_dir)
    return result
