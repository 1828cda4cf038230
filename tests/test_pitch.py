"""The pitch family: bin mapping, note classes and targets, energy vs a render, generated stores, the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from musicid.config import PitchSynthConfig, PitchTrainConfig, parse_params
from musicid.errors import ConfigError
from musicid.families.pitch.bins import BinScale, cents
from musicid.families.pitch.generate import build_set, make_rows
from musicid.families.pitch.metrics import match_frame
from musicid.families.pitch.model import PitchNet, PitchSpec, pick_peaks, refine_bins
from musicid.families.pitch.synth import (
    ENDS_INSIDE, SHORT, STARTS_INSIDE, SUSTAINED, Notes, draw_polyphonic, frequency_domain_energy, make_timbres,
    mean_square_envelope, envelope, note_classes, targets, time_domain_energy, visible_samples,
)
from musicid.store import WindowDataset, open_store

W, SR = 4096, 44100
POLYPHONY = [1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6, 7, 8, 10, 12, 16]


def test_bin_mapping_is_one_log_scale_and_inverts() -> None:
    scale = BinScale()
    assert scale.freq_of(0) == pytest.approx(20.0) and scale.freq_of(2047) == pytest.approx(5000.0)
    f = np.exp(np.random.default_rng(0).uniform(np.log(20), np.log(5000), 100))
    np.testing.assert_allclose(scale.freq_of(scale.bin_of(f)), f, rtol=1e-12)
    assert scale.cents_per_bin == pytest.approx(1200 * np.log2(250) / 2047)
    assert np.allclose(np.diff(cents(scale.centres()[1:], scale.centres()[:-1])), 0, atol=1e-9)  # constant in cents


def test_note_classes_and_confidence_targets() -> None:
    onset_drawn = np.array([-100, 100, 100, -100])
    offset = np.array([2000, 5000, 3000, 6000])
    assert note_classes(np.maximum(onset_drawn, 0), offset, W).tolist() == [ENDS_INSIDE, STARTS_INSIDE, SHORT, SUSTAINED]
    notes = Notes(np.array([100.0, 200.0, 400.0, 800.0]), np.full(4, 0.5), np.arange(4), onset_drawn, offset, np.zeros(4))
    scale = BinScale()
    conf, energy, table = targets(notes, make_timbres(4, 10, 0), scale, W, SR, 1.5)
    nearest = np.rint(scale.bin_of(notes.frequency)).astype(int)
    visible = visible_samples(notes, W) / W
    np.testing.assert_allclose(conf[nearest], [min(visible[0] * 0.5, 0.3), 1.0, min(visible[2] * 0.5, 0.3), 1.0], rtol=1e-6)
    assert np.count_nonzero(conf) == 4 and table[:, 4].tolist() == [0, 100, 100, 0]  # onsets clamped at 0
    assert table[:, 6].tolist() == [1, 2, 3, 4] and energy.max() <= 1.0
    # the energy Gaussians sum to the shares, which sum to 1 (σ = 1.5 bins: ∑ ≈ 1.5 √(2π) per note)
    assert energy.sum() == pytest.approx(1.5 * np.sqrt(2 * np.pi), rel=0.02)


def test_envelope_mean_square_is_exact() -> None:
    timbres = make_timbres(5, 10, 1)
    for timbre in range(5):
        for lo, hi, duration in ((0, 4096, 6000), (1500, 4096, 3000), (0, 300, 8192)):
            t = np.arange(lo, hi) + 0.5  # midpoints: the continuous integral's Riemann sum
            sampled = np.mean(envelope(t, duration, timbres, timbre, SR) ** 2)
            assert mean_square_envelope(lo, hi, duration, timbres, timbre, SR) == pytest.approx(sampled, rel=1e-3, abs=1e-6)


def test_frequency_domain_energy_matches_a_time_domain_render() -> None:
    """Stated tolerance: per-note energy within 5 % of the rendered note's mean square once the note
    shows ≥ 20 periods of its fundamental (sin² averages to ½ only over whole periods); median within
    2 % from 4 periods. Shorter, lower notes are rarer and looser (see benchmarks/pitch_synth.py)."""
    rng, timbres, scale = np.random.default_rng(0), make_timbres(100, 30, 0), BinScale()
    rows = []
    for _ in range(150):
        notes = draw_polyphonic(rng, POLYPHONY, 100, W, scale, True)
        fast = frequency_domain_energy(notes, timbres, W, SR, normalise=False)
        slow = time_domain_energy(notes, timbres, W, SR, normalise=False)
        periods = visible_samples(notes, W) * notes.frequency / SR
        keep = slow > 0
        rows += list(zip(np.abs(fast[keep] / slow[keep] - 1), periods[keep]))
    err, periods = np.array(rows).T
    assert len(err) > 500
    assert err[periods >= 20].max() < 0.05
    assert np.median(err[periods >= 4]) < 0.02


def test_generated_rows_are_deterministic_whatever_the_tasking(tmp_path: Path) -> None:
    cfg = PitchSynthConfig(n_bins=64, samples_per_bin={"train": 3}, polyphonic_windows={"train": 40}, shard_mb=0.1, chunk_mb=0.02,
                           n_timbres=5, max_harmonics=8)
    one = build_set(cfg, "polyphonic", "train", tmp_path / "a.zarr", workers=1)
    build_set(cfg, "polyphonic", "train", tmp_path / "b.zarr", workers=2)
    assert one["shards"] > 1  # 0.1 MB shards of 8 KB rows: several tasks
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}  # noqa: E731
    assert files(tmp_path / "a.zarr") == files(tmp_path / "b.zarr")  # byte-identical: DVC's hash is stable
    a, b = WindowDataset(tmp_path / "a.zarr"), WindowDataset(tmp_path / "b.zarr")
    full_a, full_b = a[list(range(len(a)))], b[list(range(len(b)))]
    for key in full_a:
        torch.testing.assert_close(full_a[key], full_b[key], rtol=0, atol=0)
    windows, values = make_rows(cfg, "polyphonic", "train", 7, 9)  # rows from their own seeds
    np.testing.assert_array_equal(windows.astype(np.float16), full_a["waveform"][7:9].numpy().astype(np.float16))
    group = open_store(tmp_path / "a.zarr")
    assert group.attrs["compressor"] == "none" and group.attrs["target_compressor"] == "zstd"
    assert set(group.attrs["targets"]) == {"confidence", "energy", "notes", "n_notes"}
    assert "track_index" not in group.attrs["targets"]
    n = int(full_a["n_notes"][0])
    assert 1 <= n <= 16 and full_a["notes"][0, n:].abs().sum() == 0
    # the sanity set holds bin r mod n_bins in row r, at a frequency inside that bin
    build_set(cfg, "sanity", "train", tmp_path / "s.zarr")
    s = WindowDataset(tmp_path / "s.zarr")
    assert len(s) == 64 * 3
    freqs = s[list(range(len(s)))]["notes"][:, 0, 1].numpy()
    bins = BinScale(64, cfg.fmin_hz, cfg.fmax_hz).bin_of(freqs)
    assert np.all(np.abs(bins - np.arange(len(s)) % 64) <= 0.5 + 1e-4)


def test_bad_pitch_params_name_the_key() -> None:
    with pytest.raises(ConfigError, match="window_samples 4000 must be a power of two"):
        parse_params({"pitch": {"synth": {"window_samples": 4000}}})
    with pytest.raises(ConfigError, match="fmax_hz .* below Nyquist"):
        parse_params({"pitch": {"synth": {"sample_rate": 8000, "fmax_hz": 5000}}})
    with pytest.raises(ConfigError, match="pitch.train.sets"):
        parse_params({"pitch": {"train": {"sets": ["chorales"]}}})


def test_model_puts_a_sine_on_its_bin_through_the_front_end() -> None:
    spec = PitchSpec(n_bins=512, channels=[4], dilations=[1])
    net = PitchNet(spec)
    for hz in (110.0, 440.0, 3000.0):
        x = torch.from_numpy(np.sin(2 * np.pi * hz * np.arange(W) / SR).astype(np.float32))[None]
        peak = int(net.spectrum(x)[0].argmax())
        assert abs(peak - spec.scale.bin_of(hz)) <= 0.5
        logits, energy = net(x)
        assert logits.shape == energy.shape == (1, 512)
    assert pick_peaks(np.array([0.1, 0.9, 0.8, 0.1, 0.7]), 0.5, 2).tolist() == [1, 4]
    assert refine_bins(np.zeros(5), np.array([0, 1.0, 1.0, 0, 0]), np.array([1]))[0] == pytest.approx(1.5)


def test_periodicity_channel_peaks_at_the_period_where_the_spectrum_cannot_resolve() -> None:
    """Below ~50 Hz the Hann spectrum is one blob; the NSDF still reads 1 at the note's period."""
    spec = PitchSpec(n_bins=512, channels=[4], dilations=[1], periodicity=True, harmonics=[1 / 3, 0.5, 1, 2])
    net = PitchNet(spec)
    t = np.arange(W) / SR
    for hz in (21.0, 33.0, 140.0):
        x = np.sin(2 * np.pi * hz * t + 0.7) + 0.5 * np.sin(2 * np.pi * 3 * hz * t + 0.2)  # odd harmonics only
        nsdf = net.nsdf(torch.from_numpy(x.astype(np.float32))[None])[0].numpy()
        assert nsdf[round(spec.scale.bin_of(hz))] > 0.99
        assert nsdf[round(spec.scale.bin_of(3 * hz))] < 0.0  # its 3rd harmonic's period is not the window's
    assert net.features(torch.zeros(2, W)).shape == (2, 2 * 4 + 1, 512)
    assert float(net.nsdf(torch.zeros(1, W)).abs().max()) == 0.0  # silence: no periodicity, no NaN
    saved = PitchSpec(n_bins=512).to_dict()
    del saved["periodicity"]  # a folder written before the channel existed
    assert PitchSpec.from_dict(saved).periodicity is False


def test_multipitch_matching_excuses_partial_notes() -> None:
    notes = np.array([[0, 440.0, 1, 0, 0, 8192, 4], [0, 660.0, 1, 0, 0, 100, 1]], dtype=np.float32)  # sustained, ending
    assert match_frame(np.array([441.0]), notes, 50) == (1, 0, 0)
    assert match_frame(np.array([441.0, 661.0]), notes, 50) == (1, 0, 0)  # the partial note's match is excused
    assert match_frame(np.array([500.0]), notes, 50) == (0, 1, 1)
    assert match_frame(np.array([]), notes, 50) == (0, 0, 1)


def test_training_refuses_a_store_that_does_not_fit_the_model(tmp_path: Path) -> None:
    from musicid.config import PitchModelConfig
    from musicid.families.pitch.train import TrainingError, train_pitch

    small = PitchSynthConfig(n_bins=64, samples_per_bin={"train": 1, "val": 1}, polyphonic_windows={"train": 8, "val": 8},
                             shard_mb=0.1, chunk_mb=0.02, n_timbres=3, max_harmonics=4)
    for kind in ("sanity", "polyphonic"):
        for split in ("train", "val"):
            build_set(small, kind, split, tmp_path / f"{kind}-{split}.zarr")
    with pytest.raises(TrainingError, match=r"n_bins is 64 but the model needs 128 \(pitch.synth.n_bins\)"):
        train_pitch(tmp_path, small.model_copy(update={"n_bins": 128}), PitchModelConfig(), PitchTrainConfig(),
                    tmp_path / "m", tmp_path / "r", tmp_path / "c", progress=False)
