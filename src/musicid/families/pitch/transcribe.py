"""Transcription: an onset and a frame network → notes (onset, offset, MIDI pitch, velocity).

Post-processing (`pitch_transcribe`), per pitch: an onset is a frame whose onset probability is
≥ `onset_threshold` and a local peak in time; onsets closer than `adjacent_time_s` merge into the
first; the note then lasts while the frame probability stays ≥ `frame_threshold` (the onset frame
always counts), up to the next onset of the same pitch; notes shorter than `min_note_s` are dropped.
There is no velocity network: a note's velocity is its peak onset probability (0..1).

Whole recordings are cut into the networks' windows (`window_frames` frames, consecutive), answered
window by window and stitched back; audio with no notes gives no notes and a warning, not an error.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicid.config import TranscribeConfig
from musicid.device import resolve_device
from musicid.families.pitch.frames import consecutive_windows
from musicid.families.pitch.notenet import NETWORK, NoteNet, NoteNetSpec
from musicid.models.io import ModelError, load_weights, read_config

NOTE_COLUMNS = ("onset_s", "offset_s", "pitch", "velocity")


def notes_from_probs(onset: np.ndarray, frame: np.ndarray, fps: float, min_midi: int, cfg: TranscribeConfig) -> np.ndarray:
    """(T, P) onset and frame probabilities → (n, 4) notes [onset_s, offset_s, MIDI pitch, velocity], by onset."""
    n_frames, n_pitches = onset.shape
    merge = max(1, int(round(cfg.adjacent_time_s * fps)))
    notes = []
    for p in range(n_pitches):
        col = onset[:, p]
        above = np.flatnonzero(col >= cfg.onset_threshold)
        if not len(above):
            continue
        prev = np.concatenate([[-np.inf], col[:-1]])
        nxt = np.concatenate([col[1:], [-np.inf]])
        peaks = [t for t in above if col[t] >= prev[t] and col[t] > nxt[t]]
        starts: list[int] = []
        for t in peaks:
            if not starts or t - starts[-1] >= merge:
                starts.append(int(t))
        for i, t in enumerate(starts):
            stop = starts[i + 1] if i + 1 < len(starts) else n_frames
            end = t + 1
            while end < stop and frame[end, p] >= cfg.frame_threshold:
                end += 1
            if (end - t) / fps >= cfg.min_note_s:
                notes.append((t / fps, end / fps, min_midi + p, float(col[t])))
    table = np.array(notes, dtype=np.float64).reshape(-1, 4)
    return table[np.lexsort((table[:, 2], table[:, 0]))] if len(table) else table


@dataclass
class Transcriber:
    onset: NoteNet
    frame: NoteNet
    signatures: tuple[str, str]
    device: torch.device
    window_frames: int

    @property
    def spec(self) -> NoteNetSpec:
        return self.onset.spec

    @property
    def fps(self) -> float:
        return self.spec.sample_rate / self.spec.frame_hop

    @property
    def signature(self) -> str:
        """The pair's name: onset signature + frame signature (what runs and the registry are tagged with)."""
        return "+".join(self.signatures)

    @torch.inference_mode()
    def probabilities(self, audio: np.ndarray, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Mono audio at the networks' rate → (onset, frame) probabilities, (frames, n_pitches) each."""
        cut, n_frames = consecutive_windows(np.asarray(audio, np.float32), self.spec.frame_hop, self.window_frames)
        windows = torch.from_numpy(cut)
        out: dict[str, list[np.ndarray]] = {"onset": [], "frame": []}
        for start in range(0, len(windows), batch):
            x = windows[start : start + batch].to(self.device)
            out["onset"].append(torch.sigmoid(self.onset(x)).cpu().numpy().reshape(-1, self.spec.n_pitches))
            out["frame"].append(torch.sigmoid(self.frame(x)).cpu().numpy().reshape(-1, self.spec.n_pitches))
        return np.concatenate(out["onset"])[:n_frames], np.concatenate(out["frame"])[:n_frames]

    def transcribe(self, audio: np.ndarray, cfg: TranscribeConfig, name: str = "audio") -> np.ndarray:
        onset, frame = self.probabilities(audio)
        notes = notes_from_probs(onset, frame, self.fps, self.spec.min_midi, cfg)
        if not len(notes):
            warnings.warn(f"{name}: no notes found (silence, or nothing above pitch_transcribe.onset_threshold "
                          f"{cfg.onset_threshold})", stacklevel=2)
        return notes


def evaluated_post_processing(tr: "Transcriber", report: Path) -> dict[str, Any]:
    """The post-processing an evaluation report (pitch-transcribe-evaluate's metrics.json) used with these
    very networks (thresholds tuned on validation); {} (params.yaml's) when it did not evaluate them."""
    from musicid.fsutil import read_json

    if not report.is_file():
        return {}
    evaluation = read_json(report)
    evaluated = evaluation.get("signatures", {})
    if [evaluated.get("onset"), evaluated.get("frame")] != list(tr.signatures):
        return {}
    return dict(evaluation.get("post_processing", {}))


def load_notenet(model_dir: str | Path, kind: str, device: torch.device) -> tuple[NoteNet, str, dict[str, Any]]:
    config = read_config(model_dir)
    spec = config.get("spec", {})
    if spec.get("network") != NETWORK or spec.get("kind") != kind:
        raise ModelError(f"{model_dir}: not a {kind} network (spec.network {spec.get('network')!r}, "
                         f"kind {spec.get('kind')!r})")
    net = NoteNet(NoteNetSpec.from_dict(spec))
    signature = load_weights(model_dir, net, spec)
    net.to(device).eval()
    frames = max(8, net.spec.n_fft // net.spec.frame_hop + 1)  # the centred STFT pads n_fft / 2 by reflection
    with torch.inference_mode():  # self-check: a silent window gives finite probabilities of the right shape
        probe = torch.sigmoid(net(torch.zeros(1, frames * net.spec.frame_hop, device=device)))
    if probe.shape != (1, frames, net.spec.n_pitches) or not bool(torch.isfinite(probe).all()):
        raise ModelError(f"{model_dir}: self-check failed (output {tuple(probe.shape)})")
    return net, signature, config


def load_transcriber(onset_dir: str | Path, frame_dir: str | Path, device: str = "auto",
                     window_frames: int | None = None) -> Transcriber:
    """Both networks, checked against each other (rate, hop, pitch range)."""
    dev = resolve_device(device)
    onset, sig_onset, config = load_notenet(onset_dir, "onset", dev)
    frame, sig_frame, _ = load_notenet(frame_dir, "frame", dev)
    for key in ("sample_rate", "frame_hop", "min_midi", "n_pitches"):
        if getattr(onset.spec, key) != getattr(frame.spec, key):
            raise ModelError(f"onset ({onset_dir}) and frame ({frame_dir}) networks disagree on {key}: "
                             f"{getattr(onset.spec, key)} vs {getattr(frame.spec, key)}")
    width = window_frames or int(config.get("notes", {}).get("window_frames", 128))
    return Transcriber(onset, frame, (sig_onset, sig_frame), dev, width)


def transcribe_path(tr: Transcriber, path: str | Path, cfg: TranscribeConfig) -> dict[str, Any]:
    """One audio file → {"query", "model_signature", "notes": [{onset_s, offset_s, pitch, velocity}], "warning"?}
    (decoded, mono, resampled); an undecodable file gives {"query", "error"} instead of raising."""
    from musicid.audio.decode import decode
    from musicid.audio.resample import to_model_rate

    result: dict[str, Any] = {"query": str(path), "model_signature": tr.signature}
    try:
        decoded = decode(str(path))
    except Exception as exc:  # one bad file is reported, the others go on
        return result | {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    signal = to_model_rate(decoded.samples, decoded.sample_rate, tr.spec.sample_rate)  # mono, at the networks' rate
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notes = tr.transcribe(signal, cfg, name=str(path))
    if caught:
        result["warning"] = str(caught[0].message)
    result["notes"] = [dict(zip(NOTE_COLUMNS, (round(float(a), 4), round(float(b), 4), int(p), round(float(v), 3))))
                       for a, b, p, v in notes]
    return result


def notes_array(result: dict[str, Any]) -> np.ndarray:
    """transcribe_path's notes back to the (n, 4) table."""
    return np.array([[n[c] for c in NOTE_COLUMNS] for n in result.get("notes", [])], dtype=np.float64).reshape(-1, 4)


def write_notes(notes: np.ndarray, midi_path: Path, csv_path: Path) -> None:
    """A MIDI file (pretty_midi, one piano) and a CSV of the notes."""
    from musicid.families.pitch.labelled import write_labels

    write_labels(notes, midi_path)
    with open(csv_path, "w") as fh:
        fh.write(",".join(NOTE_COLUMNS) + "\n")
        for onset, offset, pitch, velocity in notes:
            fh.write(f"{onset:.4f},{offset:.4f},{int(pitch)},{velocity:.3f}\n")
