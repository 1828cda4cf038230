"""Train the pitch model on the generated window stores with the spine's loop.

Each step draws half a batch from every set named in `train.sets` (random rows, read in one
request per set through `WindowDataset`). Loss: BCE on the confidence targets (`pos_weight` for
positive bins) + `energy_weight` × MSE on the energy shares + the `conv_l2` / `fc_l2` penalties.
The best epoch is the one with the lowest validation loss; validation also scores multi-pitch F1
(polyphonic val, at the threshold that maximises it: the best epoch's becomes the model's default
threshold) and single-note accuracy (sanity val), logged per epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from musicid.config import PitchModelConfig, PitchSynthConfig, PitchTrainConfig
from musicid.device import resolve_device
from musicid.errors import MusicidError
from musicid.families.pitch.io import save_model
from musicid.families.pitch.metrics import cents_summary, multipitch
from musicid.families.pitch.model import PitchNet, PitchSpec, frame_pitches_hz, top_pitch_hz
from musicid.fsutil import write_json
from musicid.store import WindowDataset, open_store
from musicid.training.determinism import seed_everything
from musicid.training.distributed import current_world
from musicid.training.loop import TrainResult, finish, fit, run_key, store_version, write_history

TARGETS = ("confidence", "energy")
TARGET_CACHE_MB = 2048.0  # training sets whose targets fit are decoded once: random batches then read only the mmap


class TrainingError(MusicidError):
    """The pitch stores cannot train this model (missing, empty, or made for other windows or bins)."""


def spec_from(synth: PitchSynthConfig, model_cfg: PitchModelConfig) -> PitchSpec:
    return PitchSpec(sample_rate=synth.sample_rate, window_samples=synth.window_samples, n_bins=synth.n_bins,
                     fmin_hz=synth.fmin_hz, fmax_hz=synth.fmax_hz, harmonics=list(model_cfg.harmonics),
                     channels=list(model_cfg.channels), kernel=model_cfg.kernel, dilations=list(model_cfg.dilations),
                     periodicity=model_cfg.periodicity)


def check_store(path: Path, spec: PitchSpec) -> None:
    """Refuse, in one line, a store whose windows or targets do not fit the model."""
    attrs = open_store(path).attrs
    for key, want in (("window_samples", spec.window_samples), ("sample_rate", spec.sample_rate),
                      ("n_bins", spec.n_bins), ("fmin_hz", spec.fmin_hz), ("fmax_hz", spec.fmax_hz)):
        if attrs.get(key) != want:
            raise TrainingError(f"{path}: {key} is {attrs.get(key)!r} but the model needs {want!r} "
                                f"(pitch.synth.{key}); rerun `dvc repro pitch-synth`")
    missing = [t for t in (*TARGETS, "notes", "n_notes") if t not in attrs.get("targets", [])]
    if missing:
        raise TrainingError(f"{path}: targets {missing} missing (has {attrs.get('targets')}); not a pitch store")


def blur_kernel(sigma_bins: float) -> torch.Tensor | None:
    """A peak-1 Gaussian over ±4σ bins: a note's confidence spreads to its neighbours, keeping its height."""
    if sigma_bins <= 0:
        return None
    reach = int(np.ceil(4 * sigma_bins))
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float32)
    return torch.exp(-0.5 * (offsets / sigma_bins) ** 2)[None, None]


def blurred(target: torch.Tensor, kernel: torch.Tensor | None) -> torch.Tensor:
    """Bins near a note learn "almost": a one-bin miss (4.7 cents) is not treated as a wrong pitch."""
    if kernel is None:
        return target
    spread = torch.nn.functional.conv1d(target[:, None], kernel.to(target.device), padding=kernel.shape[-1] // 2)[:, 0]
    return torch.maximum(target, spread.clamp(max=1.0))


def loss_of(model: Any, batch: dict[str, torch.Tensor], cfg: PitchTrainConfig, device: torch.device,
            l2_of: PitchNet | None = None) -> torch.Tensor:
    """`model` may be the DDP-wrapped network; `l2_of` is then the PitchNet whose weights the L2 terms read."""
    logits, energy = model(batch["waveform"].to(device))
    conv_l2, fc_l2 = (l2_of or model).l2_terms()
    return loss_from(logits, energy, batch, cfg, device) + cfg.conv_l2 * conv_l2 + cfg.fc_l2 * fc_l2


def loss_from(logits: torch.Tensor, energy: torch.Tensor, batch: dict[str, torch.Tensor], cfg: PitchTrainConfig,
              device: torch.device) -> torch.Tensor:
    """BCE on the blurred confidence target (`pos_weight`) + `energy_weight` × MSE on the energy target."""
    conf_t, energy_t = batch["confidence"].to(device).float(), batch["energy"].to(device).float()
    conf_t = blurred(conf_t, blur_kernel(cfg.confidence_blur_bins))
    pos_weight = torch.tensor(cfg.pos_weight, device=device)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, conf_t, pos_weight=pos_weight)
    return loss + cfg.energy_weight * torch.nn.functional.mse_loss(energy, energy_t)


THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.95, 0.05))


def scored_windows(model: PitchNet, batch: dict[str, torch.Tensor], logits: torch.Tensor, energy: torch.Tensor,
                   tolerance_cents: float, kind: str) -> dict[str, float]:
    """Validation figures of one store's rows from the model's outputs: for polyphonic windows the
    multi-pitch F1 at the best of THRESHOLDS, for single notes the top pitch's cents."""
    conf, energy_np = torch.sigmoid(logits).cpu().numpy(), energy.cpu().numpy()
    notes = [n[: int(k)] for n, k in zip(batch["notes"].numpy(), batch["n_notes"].numpy())]
    scale = model.spec.scale
    if kind == "polyphonic":
        f1 = {}
        for threshold in THRESHOLDS:
            predicted = [frame_pitches_hz(c, e, scale, threshold, tolerance_cents)[1] for c, e in zip(conf, energy_np)]
            f1[threshold] = multipitch(predicted, notes, tolerance_cents)["f1"]
        best = max(f1, key=lambda t: (f1[t], -abs(t - 0.5)))
        return {"f1": f1[best], "threshold": best}
    top = np.array([top_pitch_hz(c, e, scale) for c, e in zip(conf, energy_np)])
    truth = np.array([n[0, 1] if len(n) else np.nan for n in notes])
    single = cents_summary(1200 * np.log2(top / truth)[np.isfinite(truth)])
    return {"within_50c": single.get("within_50c", 0.0), "median_abs_cents": single.get("median_abs_cents", 0.0)}


def train_pitch(
    shards: Path, synth: PitchSynthConfig, model_cfg: PitchModelConfig, cfg: PitchTrainConfig, model_out: Path,
    report_dir: Path, checkpoint_root: Path, tolerance_cents: float = 50.0,
    progress: bool = True, log_epoch: Callable | None = None, on_epoch: Callable | None = None,
    deterministic: bool = False,
) -> TrainResult:
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, deterministic)
    spec = spec_from(synth, model_cfg)
    stores = {kind: {split: shards / f"{kind}-{split}.zarr" for split in ("train", "val")} for kind in cfg.sets}
    for kind in stores:
        for path in stores[kind].values():
            check_store(path, spec)
    train = {kind: WindowDataset(paths["train"], targets=TARGETS, target_cache_mb=TARGET_CACHE_MB) for kind, paths in stores.items()}
    val = {kind: WindowDataset(paths["val"]) for kind, paths in stores.items()}
    empty = [str(stores[k][s]) for k in stores for s, ds in (("train", train[k]), ("val", val[k])) if not len(ds)]
    if empty:
        raise TrainingError(f"empty pitch store(s) {', '.join(empty)}: raise pitch.synth.samples_per_bin / "
                            "polyphonic_windows or drop the set from pitch.train.sets")
    model = PitchNet(spec).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs * cfg.steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)
    per_set = max(1, cfg.batch_size // len(train))
    # evenly spread rows: sanity row r holds bin r mod n_bins, so the first rows would be the lowest notes only
    val_rows = {k: np.unique(np.linspace(0, len(ds) - 1, min(cfg.val_windows, len(ds))).astype(np.int64))
                for k, ds in val.items()}
    key = run_key(synth, model_cfg, cfg, *(store_version(p) for paths in stores.values() for p in paths.values()))
    checkpoint_dir = checkpoint_root / key

    world = current_world()  # DDP: each rank reads and learns from its share of the rows
    world.check_divides(*cfg.ddp_batch("pitch.train"))
    net = world.wrap(model, device=device)

    def step() -> float:
        losses = []
        optimizer.zero_grad(set_to_none=True)
        for ds in train.values():
            rows = world.share(torch.randint(0, len(ds), (per_set,), generator=gen).numpy())
            loss = loss_of(net, ds.read_batch(rows), cfg, device, l2_of=model) / len(train)
            loss.backward()
            losses.append(float(loss.detach()))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        return sum(losses)

    def validate(epoch: int) -> dict[str, float]:
        model.eval()
        row: dict[str, float] = {}
        losses = []
        for kind, ds in val.items():
            batch = ds.read_batch(val_rows[kind])
            with torch.inference_mode():
                logits, energy = model(batch["waveform"].to(device))
                losses.append(float(loss_from(logits, energy, batch, cfg, device)))
            scores = scored_windows(model, batch, logits, energy, tolerance_cents, kind)
            if kind == "polyphonic":
                row["val_polyphonic_f1"], row["val_threshold"] = scores["f1"], scores["threshold"]
            else:
                row["val_sanity_within_50c"] = scores["within_50c"]
                row["val_sanity_median_abs_cents"] = scores["median_abs_cents"]
        row["val_loss"] = float(np.mean(losses))
        return row

    def better(row: dict[str, float], best: dict[str, float] | None) -> bool:
        return best is None or row["val_loss"] < best["val_loss"] - 1e-7

    loop = fit(model, optimizer, scheduler, gen, epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch,
               patience=cfg.patience, checkpoint_dir=checkpoint_dir, step=step, validate=validate, better=better,
               log_epoch=log_epoch, on_epoch=on_epoch, progress=progress, label="pitch-train", monitor="val loss",
               describe=lambda r: f"loss {r['train_loss']:.4f}, val loss {r['val_loss']:.4f}" + "".join(
                   f", {k} {v:.3f}" for k, v in r.items() if k.startswith("val_") and k != "val_loss"))
    result = TrainResult.from_loop(loop)
    threshold = float(result.best.get("val_threshold", 0.5))  # the best epoch's F1-maximising threshold on validation
    info = {"train": cfg.model_dump(), "model_config": model_cfg.model_dump(), "synth": synth.model_dump(),
            "data_version": key, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
            "val_loss": result.best["val_loss"], "threshold": threshold}
    result.signature = save_model(model.cpu(), model_out, info)
    report_dir.mkdir(parents=True, exist_ok=True)
    write_history(report_dir / "history.csv", result.history)
    write_json(report_dir / "metrics.json", {
        "best_epoch": result.best_epoch, "epochs_run": len(result.history), "stopped_early": result.stopped_early,
        "signature": result.signature, "threshold": threshold, **{k: v for k, v in result.best.items() if k != "epoch"},
        "train_windows": {k: len(ds) for k, ds in train.items()},
    })
    plot_history(result.history, report_dir / "curves.png")
    finish(checkpoint_dir)
    return result


def plot_history(history: list[dict[str, float]], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=110)
    left.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train")
    left.plot(epochs, [r["val_loss"] for r in history], marker="o", label="val (selects)")
    left.set_xlabel("epoch"), left.set_ylabel("loss (BCE + energy MSE)"), left.legend(fontsize=7)
    for key, label in (("val_polyphonic_f1", "polyphonic F1 (50 c)"), ("val_sanity_within_50c", "single notes within 50 c")):
        if key in history[0]:
            right.plot(epochs, [r[key] for r in history], marker="s", label=label)
    right.set_xlabel("epoch"), right.set_ylim(0, 1), right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
