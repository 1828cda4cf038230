"""Load and run a trained pitch model: windows → per-bin confidence and energy → pitches per frame.

The folder format and signature are the spine's (`musicid.models.io`); loading rebuilds the
network from its spec, checks the signature and self-checks a forward pass. `frames_of` cuts any
signal into the model's windows, so `musicid pitch predict`, evaluation and the pyfunc model all
answer through `LoadedPitchModel.predict_signal`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicid.device import resolve_device
from musicid.families.pitch.model import PitchNet, PitchSpec, frame_pitches_hz, top_pitch_hz
from musicid.models.io import ModelError, load_weights, read_config
from musicid.models.io import save_model as save_folder

FAMILY = "pitch"
BATCH = 128


def save_model(model: PitchNet, out_dir: str | Path, info: dict[str, Any] | None = None) -> str:
    return save_folder(model, model.spec.to_dict(), FAMILY, out_dir, info)


def frames_of(signal: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames (n, window), start samples): a window at every multiple of `hop` that starts inside the
    signal, zero-padded past its end (a signal shorter than a window gives one padded frame)."""
    signal = np.asarray(signal, dtype=np.float32)
    count = max(1, -(-len(signal) // hop))
    padded = np.pad(signal, (0, max(0, (count - 1) * hop + window - len(signal))))
    starts = np.arange(count) * hop
    return np.stack([padded[s : s + window] for s in starts]), starts


@dataclass
class LoadedPitchModel:
    model: PitchNet
    spec: PitchSpec
    signature: str
    device: torch.device
    info: dict[str, Any]

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    @property
    def threshold(self) -> float:
        """The confidence threshold chosen on validation at training time (0.5 for older folders)."""
        return float(self.info.get("threshold", 0.5))

    @torch.inference_mode()
    def predict_windows(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, window) float → (confidence probabilities, energy), each (n, n_bins) float32."""
        confidence, energy = [], []
        for start in range(0, len(windows), BATCH):
            x = torch.from_numpy(np.ascontiguousarray(windows[start : start + BATCH], dtype=np.float32)).to(self.device)
            logits, share = self.model(x)
            confidence.append(torch.sigmoid(logits).float().cpu().numpy())
            energy.append(share.float().cpu().numpy())
        empty = np.zeros((0, self.spec.n_bins), np.float32)
        return (np.concatenate(confidence) if confidence else empty), (np.concatenate(energy) if energy else empty)

    def pitches(self, confidence: np.ndarray, energy: np.ndarray, threshold: float,
                min_distance_cents: float = 50.0) -> list[dict[str, float]]:
        """One frame's pitches: confidence peaks ≥ threshold at least `min_distance_cents` apart (one
        note's blurred peak is one pitch), refined to sub-bin by the energy centroid."""
        peaks, freqs = frame_pitches_hz(confidence, energy, self.spec.scale, threshold, min_distance_cents)
        return [{"frequency_hz": round(float(f), 3), "midi": round(float(69 + 12 * np.log2(f / 440.0)), 3),
                 "confidence": round(float(confidence[p]), 4), "energy": round(float(energy[p]), 4)}
                for f, p in zip(freqs, peaks)]

    def top_pitch(self, confidence: np.ndarray, energy: np.ndarray) -> float:
        """The single most confident pitch of a frame (Hz), refined: what single-note evaluation scores."""
        return top_pitch_hz(confidence, energy, self.spec.scale)

    def predict_signal(self, signal: np.ndarray, hop: int, threshold: float | None = None) -> list[dict[str, Any]]:
        """Per frame: its start time and pitches (mono signal at the model's sample rate; threshold None: the model's)."""
        threshold = self.threshold if threshold is None else threshold
        frames, starts = frames_of(signal, self.spec.window_samples, hop)
        confidence, energy = self.predict_windows(frames)
        return [{"time_s": round(float(s) / self.sample_rate, 4), "pitches": self.pitches(c, e, threshold)}
                for s, c, e in zip(starts, confidence, energy)]

    def predict_path(self, path: str | Path, hop: int, threshold: float | None = None) -> dict[str, Any]:
        from musicid.audio import decode, to_model_rate

        audio = decode(path)
        signal = to_model_rate(audio.samples, audio.sample_rate, self.sample_rate)
        return {"query": str(path), "model_signature": self.signature, "sample_rate": self.sample_rate,
                "hop_s": hop / self.sample_rate, "threshold": self.threshold if threshold is None else threshold,
                "frames": self.predict_signal(signal, hop, threshold)}


def answer_path(loaded: LoadedPitchModel, path: str | Path, hop: int, threshold: float | None) -> dict[str, Any]:
    """`predict_path`, or the file's one-line error with no frames (what the CLI and pyfunc print)."""
    from musicid.errors import MusicidError

    try:
        return loaded.predict_path(path, hop, threshold)
    except (MusicidError, OSError, RuntimeError, ValueError) as exc:
        return {"query": str(path), "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__, "frames": []}


def load_model(model_dir: str | Path, device: str | torch.device | None = "auto") -> LoadedPitchModel:
    """Load a pitch model folder, check its signature and self-check a forward pass."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    if config.get("family") != FAMILY:
        raise ModelError(f"{model_dir}: a {config.get('family', 'fingerprint')} model, not a pitch model")
    if config["spec"].get("network") == "notenet":  # the family's transcription networks load elsewhere
        raise ModelError(f"{model_dir}: a transcription ({config['spec'].get('kind')}) network, not the per-window "
                         "pitch model; use `musicid transcribe`")
    spec = PitchSpec.from_dict(config["spec"])
    model = PitchNet(spec)
    signature = load_weights(model_dir, model, spec.to_dict())
    target = resolve_device(device)
    model = model.to(target).eval()
    with torch.inference_mode():
        probe = torch.randn(2, spec.window_samples, generator=torch.Generator().manual_seed(0)) * 0.1
        logits, energy = model(probe.to(target))
    if logits.shape != (2, spec.n_bins) or energy.shape != (2, spec.n_bins) or not (
            torch.isfinite(logits).all() and torch.isfinite(energy).all()):
        raise ModelError(f"{model_dir}: self-check gave {tuple(logits.shape)}/{tuple(energy.shape)} "
                         f"(finite: {bool(torch.isfinite(logits).all())}), expected finite (2, {spec.n_bins}) twice")
    return LoadedPitchModel(model, spec, signature, target, config)
