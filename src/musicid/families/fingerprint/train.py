"""Train the segment fingerprinter on the `train` Zarr store, validate on `val`.

An epoch is `train.steps_per_epoch` batches of (clean segment, degraded shifted copy) pairs cut
from random windows. After each epoch the validation hit rate (degraded val segments searched
among clean val segments) decides early stopping, and a checkpoint is written so a rerun with the
same params and data resumes instead of starting over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from musicid.audio.augment import DegradeSpec, NoiseBank, degrade
from musicid.config import ModelConfig, TrainConfig
from musicid.errors import MusicidError
from musicid.fsutil import write_json
from musicid.families.fingerprint.model import Fingerprinter, FingerprinterSpec, nt_xent
from musicid.device import resolve_device
from musicid.families.fingerprint.io import save_model
from musicid.store import open_store, read_windows
from musicid.training.determinism import seed_everything
from musicid.training.distributed import current_world
from musicid.training.loop import LoopResult, TrainResult, finish, fit, run_key, store_version, write_history

HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_top1", "lr", "seconds")
# A tie on val top-1 counts as progress only if the val loss drops by more than this.
MIN_LOSS_DELTA = 1e-3


def spec_from_config(cfg: ModelConfig, sample_rate: int) -> FingerprinterSpec:
    return FingerprinterSpec(
        sample_rate=sample_rate, segment_s=cfg.segment_s, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
        n_mels=cfg.n_mels, f_min=cfg.f_min, f_max=min(cfg.f_max, sample_rate / 2), channels=tuple(cfg.channels),
        hidden=cfg.hidden, embedding_dim=cfg.embedding_dim,
    )


def degrade_spec(cfg: TrainConfig) -> DegradeSpec:
    return DegradeSpec(
        snr_db=(cfg.snr_db_min, cfg.snr_db_max), noise_kinds=tuple(cfg.noise_kinds),
        reverb_prob=cfg.reverb_prob, bandlimit_prob=cfg.bandlimit_prob, codec_prob=cfg.codec_prob,
    )


@dataclass
class PairSampler:
    """Cuts anchor/positive segment pairs out of preloaded windows."""

    waveform: torch.Tensor  # (rows, window_samples) on the training device
    segment: int
    max_shift: int

    def __post_init__(self) -> None:
        if self.waveform.shape[1] < self.segment:
            raise MusicidError(
                f"shard windows ({self.waveform.shape[1]} samples) are shorter than model.segment_s "
                f"({self.segment} samples); raise shards.window_s or lower model.segment_s"
            )

    def sample(self, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.randint(len(self.waveform), (batch,), generator=gen)
        room = self.waveform.shape[1] - self.segment
        anchor_start = torch.randint(0, room + 1, (batch,), generator=gen)
        shift = torch.randint(-self.max_shift, self.max_shift + 1, (batch,), generator=gen)
        positive_start = (anchor_start + shift).clamp(0, room)
        return self._cut(rows, anchor_start), self._cut(rows, positive_start)

    def _cut(self, rows: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        index = starts[:, None] + torch.arange(self.segment)[None, :]
        return self.waveform[rows.to(self.waveform.device)[:, None], index.to(self.waveform.device)]


@dataclass
class ValidationSet:
    """Fixed (seeded) validation pairs: degraded queries searched among all clean val segments."""

    references: torch.Tensor  # (n_refs, segment) clean segments on a grid
    ref_keys: torch.Tensor  # (n_refs, 2) row, start sample
    queries: torch.Tensor  # (n_queries, segment) degraded
    anchors: torch.Tensor  # (n_queries, segment) the clean segment each query was cut from
    query_keys: torch.Tensor  # (n_queries, 2) row, start sample
    tolerance: int  # samples

    @classmethod
    def build(cls, waveform: torch.Tensor, segment: int, grid: int, cfg: TrainConfig, sample_rate: int,
              bank: NoiseBank) -> "ValidationSet":
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        rows_n, window = waveform.shape
        starts = torch.arange(0, window - segment + 1, grid)
        ref_rows = torch.arange(rows_n).repeat_interleave(len(starts))
        ref_starts = starts.repeat(rows_n)
        n = min(cfg.val_queries, rows_n * len(starts))
        q_rows = torch.randint(rows_n, (n,), generator=gen)
        q_starts = torch.randint(0, window - segment + 1, (n,), generator=gen)
        cut = lambda rows, st: waveform[rows[:, None], st[:, None] + torch.arange(segment)[None, :]]  # noqa: E731
        anchors = cut(q_rows, q_starts)
        queries = degrade(anchors, sample_rate, degrade_spec(cfg), gen, bank)
        return cls(cut(ref_rows, ref_starts), torch.stack([ref_rows, ref_starts], 1), queries, anchors,
                   torch.stack([q_rows, q_starts], 1), tolerance=grid // 2 + 1)

    @torch.no_grad()
    def evaluate(self, model: Fingerprinter, temperature: float, device: torch.device) -> dict[str, float]:
        model.eval()
        embed = lambda x: torch.cat([model(b.to(device)) for b in x.split(256)])  # noqa: E731
        refs, queries, anchors = embed(self.references), embed(self.queries), embed(self.anchors)
        nearest = (queries @ refs.T).argmax(dim=1).cpu()
        found = self.ref_keys[nearest]
        hit = (found[:, 0] == self.query_keys[:, 0]) & ((found[:, 1] - self.query_keys[:, 1]).abs() <= self.tolerance)
        loss = float(nt_xent(anchors, queries, temperature))
        model.train()
        return {"val_loss": loss, "val_top1": float(hit.float().mean())}


def plot_history(history: list[dict[str, float]], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=110)
    left.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train")
    left.plot(epochs, [r["val_loss"] for r in history], marker="o", label="val")
    left.set_xlabel("epoch"), left.set_ylabel("NT-Xent loss"), left.legend()
    right.plot(epochs, [r["val_top1"] for r in history], marker="o", color="#2a9d8f")
    right.set_xlabel("epoch"), right.set_ylabel("val segment top-1"), right.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def fit_fingerprinter(
    spec: FingerprinterSpec, cfg: TrainConfig, train_wave: torch.Tensor, validation: ValidationSet, checkpoint_dir: Path,
    device: torch.device, *, reports: dict[str, ValidationSet] | None = None, init_state: dict | None = None,
    lr: float | None = None, epochs: int | None = None, progress: bool = True, log_epoch: Any = None,
    on_epoch: Any = None, label: str = "train",
) -> tuple[Fingerprinter, LoopResult]:
    """One training run on `train_wave` windows, the best epoch by `validation`'s top-1; each of
    `reports` is scored every epoch as `top1_<name>`; resumes from `checkpoint_dir`.

    `init_state` starts from other weights; `lr` and `epochs` override the config's (production
    training's later folds).
    """
    lr, epochs, reports = lr or cfg.lr, epochs or cfg.epochs, reports or {}
    sample_rate = spec.sample_rate
    bank = NoiseBank(sample_rate, tuple(cfg.noise_kinds), seed=cfg.seed, device=device)
    sampler = PairSampler(train_wave, spec.segment_samples, int(cfg.max_shift_s * sample_rate))
    model = Fingerprinter(spec).to(device)
    if init_state is not None:
        model.load_state_dict(init_state)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    total_steps = epochs * cfg.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    degradation = degrade_spec(cfg)
    world = current_world()  # DDP: each rank embeds its share of the pairs; negatives come from the whole batch
    world.check_divides(*cfg.ddp_batch("fingerprint.train"))
    embed_pairs = world.wrap(model, lambda anchor, positive: (model(anchor), model(positive)), device)

    def step() -> float:
        anchor, positive = sampler.sample(cfg.batch_size, gen)
        positive = degrade(positive, sample_rate, degradation, gen, bank)
        anchor, positive = world.share(anchor), world.share(positive)
        anchor_emb, positive_emb = embed_pairs(anchor, positive)
        loss = nt_xent(world.gather(anchor_emb), world.gather(positive_emb), cfg.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return float(loss.detach())

    def validate(epoch: int) -> dict[str, float]:
        row = validation.evaluate(model, cfg.temperature, device)
        return row | {f"top1_{name}": held.evaluate(model, cfg.temperature, device)["val_top1"]
                      for name, held in reports.items()}

    def better(row: dict[str, float], best: dict[str, float] | None) -> bool:
        return best is None or row["val_top1"] > best["val_top1"] or (
            row["val_top1"] == best["val_top1"] and row["val_loss"] < best["val_loss"] - MIN_LOSS_DELTA
        )

    loop = fit(
        model, optimizer, scheduler, gen, epochs=epochs, steps_per_epoch=cfg.steps_per_epoch,
        patience=cfg.patience, checkpoint_dir=checkpoint_dir, step=step, validate=validate, better=better,
        describe=lambda r: f"loss {r['train_loss']:.3f}, val loss {r['val_loss']:.3f}, val top-1 {r['val_top1']:.3f}"
        + "".join(f", {k} {v:.3f}" for k, v in r.items() if k.startswith("top1_")),
        log_epoch=log_epoch, on_epoch=on_epoch, progress=progress, label=label, monitor="val top-1",
    )
    return model, loop


def validation_set(waveform: torch.Tensor, spec: FingerprinterSpec, cfg: TrainConfig, seed_offset: int = 7) -> ValidationSet:
    """Seeded degraded queries among clean segments of `waveform` (the val store's, or a fold's)."""
    sample_rate = spec.sample_rate
    return ValidationSet.build(waveform, spec.segment_samples, int(cfg.val_hop_s * sample_rate), cfg, sample_rate,
                               NoiseBank(sample_rate, tuple(cfg.noise_kinds), seed=cfg.seed + seed_offset))


def train_fingerprinter(
    train_store: Path, val_store: Path, model_cfg: ModelConfig, cfg: TrainConfig, model_out: Path,
    report_dir: Path, checkpoint_root: Path, progress: bool = True,
    on_epoch: Any = None, log_epoch: Any = None, deterministic: bool = False,
) -> TrainResult:
    """Train, checkpoint every epoch, stop early, write the best model and the history.

    `log_epoch(row)` gets every history row (also the ones restored when resuming), e.g. for MLflow.
    """
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, deterministic)
    sample_rate = int(open_store(train_store).attrs["sample_rate"])
    spec = spec_from_config(model_cfg, sample_rate)
    # The default stores are tens of MB: hold them in memory and cut pairs on the device.
    train_wave = torch.from_numpy(read_windows(train_store)).to(device)
    validation = validation_set(torch.from_numpy(read_windows(val_store)), spec, cfg)
    key = run_key(model_cfg, cfg, store_version(train_store) + store_version(val_store))
    checkpoint_dir = checkpoint_root / key
    model, loop = fit_fingerprinter(spec, cfg, train_wave, validation, checkpoint_dir, device, progress=progress,
                                    log_epoch=log_epoch, on_epoch=on_epoch)
    result = TrainResult.from_loop(loop)
    info = {
        "train": cfg.model_dump(),
        "data_version": key,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "val_top1": result.best["val_top1"],
    }
    result.signature = save_model(model.cpu(), model_out, info)
    report_dir.mkdir(parents=True, exist_ok=True)
    write_history(report_dir / "history.csv", result.history, HISTORY_FIELDS)
    write_json(report_dir / "metrics.json", {
        "best_epoch": result.best_epoch, "epochs_run": len(result.history), "stopped_early": result.stopped_early,
        "val_top1": result.best["val_top1"], "val_loss": result.best["val_loss"], "signature": result.signature,
    })
    plot_history(result.history, report_dir / "curves.png")
    finish(checkpoint_dir)
    return result
