"""Note-labelled audio (synthetic composer, Bach chorales by fluidsynth) → frame targets in window stores."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from musicid.config import ConfigError, parse_params
from musicid.families.pitch.frames import build_frames_set, frame_targets, track_rows
from musicid.families.pitch.labelled import (LabelError, chorale_splits, read_labels, read_tracks, render_source,
                                             track_style, write_labels)
from musicid.store import WindowDataset


def notes_cfg(**extra):
    base = {"window_frames": 16,
            "synthetic": {"works": {"train": 1, "val": 1, "test": 1}, "versions": 1, "max_duration_s": 4.0},
            "chorales": {"pieces": 3, "renderings": {"train": 1, "val": 1, "test": 1}}}
    return parse_params({"pitch_notes": base | extra}).pitch_notes


def test_frame_targets_mark_onsets_spans_and_velocity() -> None:
    fps = 100.0
    notes = np.array([[0.10, 0.35, 60, 0.5], [0.20, 0.21, 72, 0.9], [0.0, 1.0, 10, 1.0]])  # the last is below A0
    onset, frame, velocity, dropped = frame_targets(notes, 50, fps, 21, 88)
    assert dropped == 1
    assert np.flatnonzero(onset[:, 60 - 21]).tolist() == [10] and np.flatnonzero(frame[:, 60 - 21]).tolist() == list(range(10, 35))
    assert np.flatnonzero(frame[:, 72 - 21]).tolist() == [20]  # shorter than a frame: still one frame
    assert float(velocity[10, 60 - 21]) == pytest.approx(0.5, abs=1e-3) and velocity.sum() == pytest.approx(1.4, abs=1e-2)


def test_a_tracks_windows_stitch_back_and_carry_their_notes() -> None:
    cfg = notes_cfg()
    hop, width = cfg.frame_hop, cfg.window_frames
    audio = np.random.default_rng(0).standard_normal(int(2.5 * width * hop)).astype(np.float32)
    seconds = width / cfg.frames_per_s
    notes = np.array([[0.1 * seconds, 1.5 * seconds, 64, 0.7], [2.1 * seconds, 2.3 * seconds, 40, 0.4]])
    windows, values, dropped = track_rows(audio, notes, cfg, track_index=5)
    assert windows.shape == (3, width * hop) and dropped == 0
    assert np.array_equal(windows.reshape(-1)[: len(audio)], audio)
    whole = frame_targets(notes, 3 * width, cfg.frames_per_s, cfg.min_midi, cfg.n_pitches)[1]
    assert np.array_equal(values["frame"].reshape(3 * width, -1), whole)
    assert values["n_notes"].tolist() == [1, 1, 1]  # the long note spans rows 0 and 1
    assert values["notes"][1, 0, 0] == pytest.approx(-0.9 * seconds)  # times from the row's start
    assert values["track"].tolist() == [5, 5, 5] and values["start_frame"].tolist() == [0, width, 2 * width]


def test_labels_round_trip_and_a_broken_label_file_is_named(tmp_path: Path) -> None:
    notes = np.array([[0.0, 0.5, 60, 0.5], [0.25, 1.0, 64, 1.0]])
    write_labels(notes, tmp_path / "a.mid")
    back = read_labels(tmp_path / "a.mid")
    assert back[:, 2].tolist() == [60, 64] and np.allclose(back[:, :2], notes[:, :2], atol=2e-3)
    (tmp_path / "bad.mid").write_bytes(b"MThd not really")
    with pytest.raises(LabelError, match="bad.mid: not a readable MIDI file"):
        read_labels(tmp_path / "bad.mid")


def test_synthetic_source_renders_labelled_tracks_split_by_work_and_quarantines_a_bad_label(tmp_path: Path) -> None:
    cfg = notes_cfg()
    summary = render_source("synthetic", cfg, tmp_path / "synthetic")
    tracks = read_tracks(tmp_path / "synthetic")
    assert [t["split"] for t in tracks] == ["train", "val", "test"] and len({t["piece"] for t in tracks}) == 3
    assert summary["splits"]["train"]["notes"] > 0
    first = tracks[0]["track"]
    notes = read_labels(tmp_path / "synthetic" / "labels" / f"{first}.mid")
    assert 21 <= notes[:, 2].min() and notes[:, 2].max() < 109 and notes[:, 1].max() <= 4.0 + 1e-6
    again = render_source("synthetic", cfg, tmp_path / "again")  # deterministic: same params, same bytes
    assert again["splits"] == summary["splits"]
    assert (tmp_path / "again/audio" / f"{first}.flac").read_bytes() == (tmp_path / "synthetic/audio" / f"{first}.flac").read_bytes()
    built = build_frames_set(cfg, tmp_path / "synthetic", "synthetic", "train", tmp_path / "train.zarr")
    rows = WindowDataset(tmp_path / "train.zarr").read_batch(slice(0, built["rows"]))
    assert built["tracks"] == 1 and int(rows["onset"].sum()) > 0 and rows["frame"].shape[1:] == (16, 88)
    (tmp_path / "synthetic/labels" / f"{first}.mid").write_bytes(b"garbage")
    broken = build_frames_set(cfg, tmp_path / "synthetic", "synthetic", "train", tmp_path / "train2.zarr")
    assert broken["tracks"] == 0 and broken["quarantined"][0]["track"] == first
    assert "not a readable MIDI file" in broken["quarantined"][0]["reason"]


def test_chorales_split_by_piece_and_render_through_fluidsynth(tmp_path: Path) -> None:
    cfg = notes_cfg()
    ids = [f"bwv{i}" for i in range(40)]
    splits = chorale_splits(ids, cfg)
    assert sum(v == "test" for v in splits.values()) == 4 and sum(v == "val" for v in splits.values()) == 4
    assert chorale_splits(ids[:3], cfg) and sorted(chorale_splits(ids[:3], cfg).values()) == ["test", "train", "val"]
    summary = render_source("chorales", cfg, tmp_path / "chorales")
    tracks = read_tracks(tmp_path / "chorales")
    assert summary["tracks"] == 3 and {t["split"] for t in tracks} == {"train", "val", "test"}
    for t in tracks:
        notes = read_labels(tmp_path / "chorales/labels" / f"{t['track']}.mid")
        assert len(notes) == int(t["notes"]) > 50
        assert float(t["duration_s"]) >= notes[:, 1].max()  # the audio holds every labelled note
        assert track_style(t) in cfg.chorales.styles  # the style the scores are broken down by
    with open(tmp_path / "chorales/tracks.csv", newline="") as fh:
        assert next(csv.reader(fh)) == ["track", "piece", "split", "duration_s", "notes", "description"]


def test_bad_notes_params_name_the_key() -> None:
    with pytest.raises(ConfigError, match="pitch_notes.chorales.styles.0: Input should be 'church_organ'"):
        parse_params({"pitch_notes": {"chorales": {"styles": ["kazoo"]}}})
    with pytest.raises(ConfigError, match="pitch_notes: min_midi \\+ n_pitches"):
        parse_params({"pitch_notes": {"min_midi": 60}})
    with pytest.raises(ConfigError, match="pitch_notes.sources.0"):
        parse_params({"pitch_notes": {"sources": ["maestro"]}})


def test_post_processing_turns_probabilities_into_notes() -> None:
    from musicid.config import TranscribeConfig
    from musicid.families.pitch.transcribe import notes_from_probs

    fps, cfg = 100.0, TranscribeConfig()
    onset, frame = np.zeros((100, 88)), np.zeros((100, 88))
    onset[10, 39], onset[12, 39] = 0.9, 0.8  # two onset peaks 20 ms apart: one note (adjacent_time_s 50 ms)
    frame[10:40, 39] = 0.9
    onset[50, 39], frame[50:56, 39] = 0.7, 0.9  # a second note of the same pitch
    onset[70, 10], frame[70:72, 10] = 0.9, 0.9  # 20 ms: shorter than min_note_s, dropped
    onset[80, 60] = 0.4  # below onset_threshold
    notes = notes_from_probs(onset, frame, fps, 21, cfg)
    assert notes[:, 2].tolist() == [60, 60]
    assert notes[0, :2].tolist() == pytest.approx([0.10, 0.40]) and notes[1, :2].tolist() == pytest.approx([0.50, 0.56])
    assert notes[0, 3] == pytest.approx(0.9)
    assert len(notes_from_probs(np.zeros((50, 88)), np.zeros((50, 88)), fps, 21, cfg)) == 0


def test_note_scores_break_down_by_style_best_first_and_plot(tmp_path: Path) -> None:
    from musicid.families.pitch.transcribe_eval import by_style, style_bars_png

    def piece(style: str, f1: float) -> dict:
        return {"track": "t", "style": style, "onset_precision": f1, "onset_recall": f1, "onset_f1": f1,
                "onset_offset_f1": f1 / 2}

    styles = by_style([piece("choir_aahs", 0.2), piece("piano", 0.9), piece("choir_aahs", 0.4), piece("brass", 0.9)])
    assert list(styles) == ["brass", "piano", "choir_aahs"]  # best first, ties by name
    assert styles["choir_aahs"]["pieces"] == 2 and styles["choir_aahs"]["onset_f1"] == pytest.approx(0.3)
    assert styles["choir_aahs"]["onset_offset_f1"] == pytest.approx(0.15)
    assert track_style({"description": "string_quartet, tempo ×0.9, transpose +1"}) == "string_quartet"
    assert track_style({"description": ""}) == "unknown"
    style_bars_png("chorales", styles, tmp_path / "bars.png")
    assert (tmp_path / "bars.png").read_bytes()[:4] == b"\x89PNG"


def test_tuning_grid_tries_every_combination_and_keeps_fixed_values_for_empty_lists() -> None:
    from musicid.config import TranscribeConfig

    cfg = parse_params({"pitch_transcribe": {"min_note_s": 0.03, "tune": {
        "onset_threshold": [0.3, 0.5], "frame_threshold": [0.4, 0.6], "min_note_s": []}}}).pitch_transcribe
    grid = cfg.tune.grid(cfg.post_processing())
    assert len(grid) == 4 and {g["min_note_s"] for g in grid} == {0.03}
    assert grid[0] == {"onset_threshold": 0.3, "frame_threshold": 0.4, "min_note_s": 0.03}
    assert isinstance(cfg, TranscribeConfig)
    with pytest.raises(ConfigError, match="pitch_transcribe.tune.frame_threshold.1"):
        parse_params({"pitch_transcribe": {"tune": {"frame_threshold": [0.5, 1.2]}}})


def test_note_networks_keep_one_output_per_frame_and_key_and_see_only_their_context() -> None:
    import torch

    from musicid.families.pitch.notenet import NoteNet, NoteNetSpec, log_frequency_filters

    spec = NoteNetSpec(kind="frame", channels=[4, 4, 4], lstm_hidden=4, context_frames=3)
    filters, n_bins = log_frequency_filters(spec)
    assert n_bins % spec.bins_per_semitone == 0 and np.allclose(filters.sum(axis=0), 1.0, atol=1e-5)
    net = NoteNet(spec).eval()
    x = torch.randn(2, 32 * spec.frame_hop)
    with torch.no_grad():
        y = net(x)
        assert y.shape == (2, 32, 88)
        later = x.clone()
        later[:, 24 * spec.frame_hop :] = 0  # change only the last 8 frames' audio
        y2 = net(later)
    # frames far before the change keep their logits: the LSTM reads 3 frames, the convs 3 more, the STFT ~8
    assert torch.allclose(y[:, :8], y2[:, :8], atol=1e-5) and not torch.allclose(y[:, 28:], y2[:, 28:])


@pytest.mark.parametrize("context_frames, bidirectional", [(5, True), (6, True), (1, True), (4, False)])
def test_centre_lstm_equals_running_the_lstm_over_every_unfolded_window(context_frames: int, bidirectional: bool) -> None:
    """The shortcut (each direction runs only the steps that reach the centre) must give what the
    plain definition gives: every frame's zero-padded window through `nn.LSTM`, read at its centre."""
    import torch

    from musicid.families.pitch.notenet import NoteNet, NoteNetSpec

    torch.manual_seed(0)
    spec = NoteNetSpec(kind="onset", channels=[4, 4, 4], lstm_hidden=5, context_frames=context_frames,
                       bidirectional=bidirectional)
    net = NoteNet(spec)
    seq = torch.randn(6, 20, 4, requires_grad=True)
    k = context_frames
    padded = torch.nn.functional.pad(seq, (0, 0, k // 2, k - 1 - k // 2))
    windows = padded.unfold(1, k, 1).permute(0, 1, 3, 2).reshape(6 * 20, k, 4)
    reference = net.lstm(windows)[0][:, k // 2].reshape(6, 20, -1)
    fast = net.centre_lstm(seq)
    assert fast.shape == reference.shape and torch.allclose(fast, reference, atol=1e-6)
    (g_ref,) = torch.autograd.grad(reference.sum(), net.lstm.weight_ih_l0)
    (g_fast,) = torch.autograd.grad(fast.sum(), net.lstm.weight_ih_l0)
    assert torch.allclose(g_fast, g_ref, atol=1e-5)


def test_bad_transcription_params_name_the_key() -> None:
    with pytest.raises(ConfigError, match="pitch_transcribe.onset_threshold"):
        parse_params({"pitch_transcribe": {"onset_threshold": 1.5}})
    with pytest.raises(ConfigError, match="pitch_frame.context_frames"):
        parse_params({"pitch_frame": {"context_frames": 0}})


def test_production_transcriber_resumes_mid_network_to_the_same_networks_and_ranks_each(
        tmp_path: Path, mlflow_db: Path) -> None:
    """pitch-train-prod's library: onset then frame network, each 2 folds + a final run on the
    synthetic set's train + val tracks (test tracks held out). Killed (an exception) in the frame
    network's second fold, the rerun restores the onset network's phases (trains none of them again),
    resumes the frame network and ends with the same networks as an uninterrupted run; each phase is a
    nested MLflow run tagged with its network, and `exp best-epochs` ranks each network on its own."""
    from musicid.config import PitchProdConfig, TrackingConfig
    from musicid.experiments.best_epochs import best_epochs
    from musicid.families.pitch.prod import train_transcriber_prod
    from musicid.models.io import read_config
    from musicid.tracking import stage_run

    cfg = notes_cfg(synthetic={"works": {"train": 2, "val": 1, "test": 1}, "versions": 2, "max_duration_s": 4.0})
    render_source("synthetic", cfg, tmp_path / "labelled" / "synthetic")
    for split in ("train", "val", "test"):
        build_frames_set(cfg, tmp_path / "labelled/synthetic", "synthetic", split, tmp_path / f"shards/synthetic-{split}.zarr")
    tiny = {"channels": [4, 4, 4], "lstm_hidden": 4, "context_frames": 3, "epochs": 1, "steps_per_epoch": 2,
            "batch_size": 2, "eval_windows": 4, "device": "cpu", "sets": ["synthetic"]}
    params = parse_params({"pitch_onset": tiny, "pitch_frame": tiny})
    networks = {"onset": params.pitch_onset, "frame": params.pitch_frame}
    prod = PitchProdConfig(folds=2, epochs=2, final_epochs=1, early_stop_on="synthetic")

    def train(out: str, run=None, on_epoch=None) -> dict:
        return train_transcriber_prod(tmp_path / "shards", tmp_path / "labelled", cfg, networks, prod,
                                      tmp_path / out / "model", tmp_path / out / "report", tmp_path / out / "state",
                                      run=run, progress=False, on_epoch=on_epoch)

    reference = train("ref")
    assert list(reference["networks"]) == ["onset", "frame"]
    assert reference["networks"]["onset"]["train_tracks"] == {"synthetic": 6}  # 3 works × 2 renderings, test held out
    assert all(n == 3 for n in reference["networks"]["onset"]["fold_tracks"]["synthetic"].values())
    assert set(reference["final"]) >= {"onset_test_synthetic_f1", "frame_test_synthetic_f1"}
    assert read_config(tmp_path / "ref/model/frame")["kind"] == "frame"
    tracking = TrackingConfig(system_metrics=False)

    class Stop(Exception):
        pass

    epochs = []

    def stop_in_frame_fold_2(epoch: int) -> None:
        epochs.append(epoch)
        if len(epochs) == 8:  # onset: 2 + 2 + 1 epochs; frame: fold-1 2, fold-2 epoch 1
            raise Stop

    with pytest.raises(Stop), stage_run("pitch-train-prod", tracking, {"prod": prod.model_dump()}, family="pitch") as run:
        train("run", run, stop_in_frame_fold_2)
    epochs.clear()
    with stage_run("pitch-train-prod", tracking, {"prod": prod.model_dump(), "onset": networks["onset"].model_dump(),
                                                 "frame": networks["frame"].model_dump()}, family="pitch") as run:
        resumed = train("run", run, epochs.append)
    assert len(epochs) == 2, epochs  # the frame network's fold-2 epoch 2 and its final epoch: nothing else again
    assert resumed["signature"] == reference["signature"] and resumed["final"] == reference["final"]
    assert (tmp_path / "run/report/frame/best-epochs.md").read_text().startswith(
        "# Best epochs of production training (frame network)")
    found, by_network, metrics = best_epochs(None)
    assert found.info.run_id == run.run_id and metrics == ["test_synthetic_f1"] and list(by_network) == ["onset", "frame"]
    for kind in ("onset", "frame"):
        assert [(r["phase"], r["epoch"]) for r in by_network[kind]["test_synthetic_f1"]] == [
            (r["phase"], r["epoch"]) for r in resumed["networks"][kind]["best_epochs"]["test_synthetic_f1"]]
