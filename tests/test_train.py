from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from musicid.audio import to_model_rate
from musicid.config import ModelConfig, ShardsConfig, SynthConfig, TrainConfig
from musicid.data.synth import render_track_preview
from musicid.families.fingerprint.model import Fingerprinter, FingerprinterSpec, nt_xent
from musicid.families.fingerprint.io import embed_signal, load_model, ModelError, save_model
from musicid.store import ShardWriter
from musicid.audio.framing import frame_windows
from musicid.families.fingerprint.train import train_fingerprinter

TINY_MODEL = ModelConfig(n_mels=32, channels=[8, 16, 16], hidden=64, embedding_dim=16)
TINY_TRAIN = TrainConfig(epochs=3, steps_per_epoch=2, batch_size=8, val_queries=8, patience=5, device="cpu")


def _store(path: Path, tracks: list[int]) -> Path:
    cfg = ShardsConfig(window_s=2.0, hop_s=2.0, dtype="float32", chunk_mb=0.1, shard_mb=0.5)
    synth = SynthConfig(min_duration_s=8, max_duration_s=8)
    with ShardWriter(path, cfg=cfg, track_ids=[str(t) for t in tracks], work_ids=[str(t) for t in tracks]) as writer:
        for position, work in enumerate(tracks):
            audio, rate = render_track_preview(work, 0, synth)
            windows, starts = frame_windows(to_model_rate(audio, rate, 8000), cfg.window_samples, cfg.hop_samples)
            n = len(windows)
            writer.add(windows, {"track_index": np.full(n, position, np.int32), "work_index": np.full(n, position, np.int32),
                                 "start_s": (starts / 8000).astype(np.float32)})
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("stores")
    return _store(root / "train.zarr", [0, 1, 2]), _store(root / "val.zarr", [3, 4])


def test_embeddings_have_the_configured_size_and_unit_norm() -> None:
    model = Fingerprinter(FingerprinterSpec(embedding_dim=32, hidden=128))
    out = model(torch.randn(5, 8000) * 0.1)
    assert out.shape == (5, 32)
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)
    # gain does not change the log-mel front-end (max-normalised), so not the embedding either
    model.eval()
    x = torch.randn(2, 8000) * 0.1
    assert torch.allclose(model(x), model(x * 3.0), atol=1e-4)


def test_nt_xent_prefers_matching_pairs() -> None:
    z = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    shuffled = z[torch.randperm(16)]
    assert nt_xent(z, z, 0.1) < nt_xent(z, shuffled, 0.1)


def test_saved_model_round_trips_and_tampering_is_refused(tmp_path: Path) -> None:
    model = Fingerprinter(FingerprinterSpec(n_mels=32, channels=(8, 16), hidden=64, embedding_dim=16))
    signature = save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m", "cpu")
    assert loaded.signature == signature and loaded.embedding_dim == 16
    emb, starts = embed_signal(loaded, np.random.default_rng(0).standard_normal(8000 * 3).astype(np.float32) * 0.1, 0.5)
    assert emb.shape == (5, 16) and np.allclose(starts, [0, 0.5, 1.0, 1.5, 2.0])
    state = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    next(iter(state.values())).add_(1.0)
    torch.save(state, tmp_path / "m" / "model.pt")
    with pytest.raises(ModelError, match="signature"):
        load_model(tmp_path / "m", "cpu")
    with pytest.raises(ModelError, match="not a model folder"):
        load_model(tmp_path / "missing", "cpu")


def test_training_writes_model_history_and_resumes_after_interruption(stores: tuple[Path, Path], tmp_path: Path) -> None:
    train_store, val_store = stores
    reference = train_fingerprinter(train_store, val_store, TINY_MODEL, TINY_TRAIN, tmp_path / "ref_model",
                                    tmp_path / "ref_report", tmp_path / "ckpt_ref", progress=False)
    assert len(reference.history) == 3 and reference.resumed_from_epoch == 0
    assert (tmp_path / "ref_report" / "history.csv").read_text().count("\n") == 4
    assert (tmp_path / "ref_report" / "curves.png").stat().st_size > 0
    assert not any((tmp_path / "ckpt_ref").iterdir()), "checkpoints are removed after a completed run"

    class Interrupted(Exception):
        pass

    def crash_after_two(epoch: int) -> None:
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_fingerprinter(train_store, val_store, TINY_MODEL, TINY_TRAIN, tmp_path / "model", tmp_path / "report",
                            tmp_path / "ckpt", progress=False, on_epoch=crash_after_two)
    assert not (tmp_path / "model").exists(), "no model is published by an interrupted run"
    resumed = train_fingerprinter(train_store, val_store, TINY_MODEL, TINY_TRAIN, tmp_path / "model", tmp_path / "report",
                                  tmp_path / "ckpt", progress=False)
    assert resumed.resumed_from_epoch == 2 and len(resumed.history) == 3
    assert [round(r["train_loss"], 5) for r in resumed.history] == [round(r["train_loss"], 5) for r in reference.history]
    assert resumed.signature == reference.signature


def test_early_stopping_stops_after_patience(stores: tuple[Path, Path], tmp_path: Path) -> None:
    train_store, val_store = stores
    cfg = TINY_TRAIN.model_copy(update={"epochs": 6, "patience": 1, "lr": 1e-9})  # nothing can improve
    result = train_fingerprinter(train_store, val_store, TINY_MODEL, cfg, tmp_path / "m", tmp_path / "r",
                                 tmp_path / "c", progress=False)
    assert result.stopped_early and len(result.history) == 2 and result.best_epoch == 1


def test_production_training_folds_by_work_resumes_to_the_same_model(stores: tuple[Path, Path], tmp_path: Path) -> None:
    """fingerprint-train-prod's library: train + val tracks in 2 folds + a final run, the test tracks held out;
    interrupted in fold 2 and rerun, it ends with the same weights and figures as an uninterrupted run."""
    from musicid.config import ProdTrainConfig
    from musicid.families.fingerprint.prod import train_fingerprinter_prod

    shards = stores[0].parent
    if not (shards / "test.zarr").exists():
        _store(shards / "test.zarr", [5, 6])
    prod = ProdTrainConfig(folds=2, epochs=2, final_epochs=1)
    train = TINY_TRAIN.model_copy(update={"val_queries": 16})
    reference = train_fingerprinter_prod(shards, TINY_MODEL, train, prod, tmp_path / "ref", tmp_path / "ref-report",
                                         tmp_path / "ref-state", progress=False)
    assert reference["train_tracks"] == 5 and sorted(reference["fold_tracks"].values()) == [2, 3]
    assert list(reference["phases"]) == ["fold-1", "fold-2", "final"] and "top1_test" in reference["final"]

    class Stop(Exception):
        pass

    def stop_in_fold_2(epoch: int, seen: list[int] = []) -> None:  # noqa: B006  (counts across phases)
        seen.append(epoch)
        if len(seen) == 3:
            raise Stop

    with pytest.raises(Stop):
        train_fingerprinter_prod(shards, TINY_MODEL, train, prod, tmp_path / "m", tmp_path / "r", tmp_path / "state",
                                 progress=False, on_epoch=stop_in_fold_2)
    assert not (tmp_path / "m").exists() and (tmp_path / "state").exists()
    resumed = train_fingerprinter_prod(shards, TINY_MODEL, train, prod, tmp_path / "m", tmp_path / "r",
                                       tmp_path / "state", progress=False)
    assert resumed["signature"] == reference["signature"] and resumed["final"] == reference["final"]
    assert "| 1 | " in (tmp_path / "r" / "best-epochs.md").read_text()
