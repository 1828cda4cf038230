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
from musicid.families.works.losses import CenterLoss, batch_hard_triplet, focal_loss, ranking_triplet
from musicid.families.works.model import WorkEncoder, WorkSpec
from musicid.fsutil import write_json
from musicid.store.ragged import RaggedStore
from musicid.training.determinism import seed_everything
from musicid.training.distributed import current_world
from musicid.training.loop import LoopResult, TrainResult, finish, fit, run_key, store_version, write_history

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
    """m-per-class batches of random CQT crops from items of one or more stores (all speeds).

    `parts` lists (store, rows): the rows of each store to train on (None: all of them), so a fold
    of production training samples its share of train, val and test stores alike. `classes` fixes the
    label order (the same classifier across folds); by default the works found, sorted.
    """

    def __init__(self, parts: list[tuple[RaggedStore, list[int] | None]], cfg: WorksTrainConfig, bins_per_octave: int,
                 classes: list[str] | None = None) -> None:
        self.cfg, self.bins_per_octave = cfg, bins_per_octave
        self.sources: list[tuple[RaggedStore, int]] = []
        works: list[str] = []
        for store, rows in parts:
            rows = list(range(len(store))) if rows is None else list(rows)
            column = store.column("work_id")
            self.sources += [(store, row) for row in rows]
            works += [column[row] for row in rows]
        self.classes = classes if classes is not None else sorted(set(works))
        self.label = {w: i for i, w in enumerate(self.classes)}
        self.items_of: list[list[int]] = [[] for _ in self.classes]
        for i, work in enumerate(works):
            self.items_of[self.label[work]].append(i)
        frames = sum(store.attrs["frames"] * store.attrs["width"] for store, _ in parts)
        self.cached = self._load() if frames * 4 <= IN_MEMORY_BYTES else None
        self.lengths = [store.length(row) for store, row in self.sources]

    def _load(self) -> list[np.ndarray]:
        by_store: dict[int, tuple[RaggedStore, list[int], list[int]]] = {}
        for i, (store, row) in enumerate(self.sources):
            by_store.setdefault(id(store), (store, [], []))[1].append(row)
            by_store[id(store)][2].append(i)
        out: list[np.ndarray] = [np.zeros(0)] * len(self.sources)
        for store, rows, positions in by_store.values():
            for position, item in zip(positions, store.load_items(rows)):
                out[position] = item
        return out

    def _crop(self, i: int, frames: int, gen: torch.Generator) -> torch.Tensor:
        length = self.lengths[i]
        start = int(torch.randint(0, max(1, length - frames + 1), (1,), generator=gen))
        if self.cached is not None:
            item = self.cached[i][start : start + frames]
        else:
            store, row = self.sources[i]
            item = store.item(row, start, start + frames)
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


def validation_loss(perf: Performances, embeddings: np.ndarray, names: list[str], margin: float) -> float:
    """Mean triplet term of the validation queries against their sets' references: a loss that can
    rise while the training loss falls (overfitting), which the tuning summary reads."""
    works, losses = np.asarray(perf.work_ids), []
    for name in names:
        query_roles, ref_roles = TESTSETS[name]
        q, r = perf.select(query_roles), perf.select(ref_roles)
        losses += ranking_triplet(embeddings[q], embeddings[r], works[q][:, None] == works[r][None, :],
                                  q[:, None] == r[None, :], margin)
    return float(np.mean(losses)) if losses else 0.0


def plot_history(history: list[dict[str, float]], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=110)
    left.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train (focal + triplet + center)")
    if all("val_loss" in r for r in history):
        left.plot(epochs, [r["val_loss"] for r in history], marker="o", label="val (triplet on the rankings)")
    left.set_xlabel("epoch"), left.set_ylabel("loss"), left.legend(fontsize=7)
    right.plot(epochs, [r["val_mAP"] for r in history], marker="o", label="val mAP (selects)")
    for key in sorted({k for r in history for k in r if k.startswith("mAP_")}):
        points = [(r["epoch"], r[key]) for r in history if r.get(key) not in (None, "")]
        right.plot([p[0] for p in points], [p[1] for p in points], marker="s", linestyle="--", label=key)
    right.set_xlabel("epoch"), right.set_ylabel("mAP"), right.set_ylim(0, 1), right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def fit_encoder(
    spec: WorkSpec, cfg: WorksTrainConfig, sampler: ChunkSampler, perf: Performances, val_names: list[str],
    report_names: list[str], checkpoint_dir: Path, device: torch.device, *, init_state: dict | None = None,
    lr: float | None = None, epochs: int | None = None, progress: bool = True, log_epoch: Callable | None = None,
    on_epoch: Callable | None = None, label: str = "works-train",
) -> tuple[WorkEncoder, LoopResult]:
    """One training run: steps on `sampler`, the best epoch by the mean mAP of `val_names` (roles of
    `perf`), `report_names` scored every eval_every epochs; resumes from `checkpoint_dir`.

    `init_state` starts from other weights (matching shapes only); `lr` and `epochs` override the
    config's (production training's later folds).
    """
    lr, epochs = lr or cfg.lr, epochs or cfg.epochs
    model = WorkEncoder(spec)
    if init_state is not None:
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in init_state.items() if k in own and own[k].shape == v.shape}, strict=False)
    model = model.to(device)
    center = CenterLoss(len(sampler.classes), spec.embedding_dim).to(device)
    params = list(model.parameters()) + list(center.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: max(cfg.min_lr / lr, cfg.lr_decay ** e))
    gen = torch.Generator().manual_seed(cfg.seed)
    world = current_world()  # DDP: each rank encodes its share of the chunks; triplets are mined in the whole batch
    world.check_divides(cfg.ddp_batch("works.train")[0], min(cfg.works_per_batch, len(sampler.classes)) * cfg.per_work)
    # the classifier and the centres learn outside the wrapped forward: DDP averages every gradient all the same
    encode = world.wrap([model, center], model.embed_raw, device)

    def step() -> float:
        frames = cfg.chunk_frames[int(torch.randint(0, len(cfg.chunk_frames), (1,), generator=gen))]
        x, labels = (world.share(t).to(device) for t in sampler.sample(frames, gen))
        raw = encode(x)
        emb = torch.nn.functional.normalize(raw, dim=-1)
        loss = (cfg.focal_weight * focal_loss(model.logits(raw), labels, cfg.focal_gamma)
                + cfg.triplet_weight * batch_hard_triplet(world.gather(emb), world.gather(labels), cfg.triplet_margin)
                + cfg.center_weight * center(emb, labels))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        return float(loss.detach())

    def validate(epoch: int) -> dict[str, float]:
        wanted = set(val_names) | (set(report_names) if epoch % cfg.eval_every == 0 or epoch == epochs else set())
        needed = perf.select(tuple({role for name in wanted for side in TESTSETS[name] for role in side}))
        embeddings = np.zeros((len(perf.frames), spec.embedding_dim), dtype=np.float32)  # only what is scored
        embeddings[needed] = embed_frames(model, [perf.frames[i] for i in needed], device, spec.min_frames)
        results = evaluate_testsets(sorted(wanted), perf, embeddings)
        row = {"val_mAP": float(np.mean([results[name]["mAP"] for name in val_names])),
               "val_loss": validation_loss(perf, embeddings, val_names, cfg.triplet_margin)}
        row |= {f"mAP_{name}": float(m["mAP"]) for name, m in results.items() if m.get("mAP") is not None}
        row |= {f"MR1_{name}": float(m["MR1"]) for name, m in results.items() if m.get("MR1") is not None}
        return row

    def better(row: dict[str, float], best: dict[str, float] | None) -> bool:
        return best is None or row["val_mAP"] > best["val_mAP"] + 1e-6

    loop = fit(
        model, optimizer, scheduler, gen, epochs=epochs, steps_per_epoch=cfg.steps_per_epoch, patience=cfg.patience,
        checkpoint_dir=checkpoint_dir, step=step, validate=validate, better=better,
        end_epoch=lambda epoch: scheduler.step(), log_epoch=log_epoch, on_epoch=on_epoch, progress=progress,
        describe=lambda r: f"loss {r['train_loss']:.3f}, val mAP {r['val_mAP']:.3f}"
        + "".join(f", {k} {v:.3f}" for k, v in r.items() if k.startswith("mAP_")),
        label=label, monitor="val mAP", extra_modules={"center": center},
    )
    return model, loop


def train_works(
    shards: Path, model_cfg: WorksModelConfig, cfg: WorksTrainConfig, eval_cfg: WorksEvaluateConfig, model_out: Path,
    report_dir: Path, checkpoint_root: Path, progress: bool = True, log_epoch: Callable | None = None,
    on_epoch: Callable | None = None, init_model: Path | None = None, deterministic: bool = False,
) -> TrainResult:
    """Train, checkpoint every epoch, stop early, write the best model, history, metrics and curves.

    `init_model` starts from another works model's weights (fine-tuning; its classifier is replaced
    when the training works differ).
    """
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, deterministic)
    train_store = RaggedStore(shards / "train.zarr")
    val_store, test_store = RaggedStore(shards / "val.zarr"), RaggedStore(shards / "test.zarr")
    features = train_store.attrs["features"]
    sampler = ChunkSampler([(train_store, None)], cfg, int(features["bins_per_octave"]))
    if len(sampler.classes) < 2:
        raise TrainingError(f"{shards}/train.zarr holds {len(sampler.classes)} work(s); need at least 2 to train")
    spec = spec_from_config(model_cfg, features, len(sampler.classes), min(cfg.chunk_frames))
    init_state = None
    if init_model is not None:
        from musicid.families.works.io import load_model

        init_state = load_model(init_model, "cpu").model.state_dict()
    perf = Performances.from_stores([train_store, val_store, test_store])
    val_names = [n for n in ("val_unseen", "val_seen") if len(perf.select((n,)))]
    if not val_names:
        raise TrainingError(f"{shards}/val.zarr holds no validation performance; raise works.split.val_* shares")
    key = run_key(model_cfg, cfg, eval_cfg.testsets, str(init_model or ""), store_version(shards))
    checkpoint_dir = checkpoint_root / key
    model, loop = fit_encoder(spec, cfg, sampler, perf, val_names, list(eval_cfg.testsets), checkpoint_dir, device,
                              init_state=init_state, progress=progress, log_epoch=log_epoch, on_epoch=on_epoch)
    result = TrainResult.from_loop(loop)
    info = {"train": cfg.model_dump(), "model_config": model_cfg.model_dump(), "data_version": key,
            "classes": sampler.classes, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
            "val_mAP": result.best["val_mAP"], "init_model": str(init_model or "")}
    result.signature = save_model(model.cpu(), model_out, info)
    report_dir.mkdir(parents=True, exist_ok=True)
    fields = ["epoch", "train_loss", "val_loss", "val_mAP", *sorted({k for r in result.history for k in r
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
