"""Load and run a trained fingerprinter: the one way every consumer gets its embeddings.

The folder format and its signature are the spine's (`musicid.models.io`); this module rebuilds
the network from the spec, self-checks it, and embeds signals in segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicid.audio.framing import frame_windows
from musicid.device import resolve_device
from musicid.families.fingerprint.model import Fingerprinter, FingerprinterSpec
from musicid.models.io import ModelError, load_weights, read_config
from musicid.models.io import save_model as save_folder

FAMILY = "fingerprint"


@dataclass
class LoadedModel:
    model: Fingerprinter
    spec: FingerprinterSpec
    signature: str
    device: torch.device
    info: dict[str, Any]

    @property
    def embedding_dim(self) -> int:
        return self.spec.embedding_dim

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    @property
    def segment_s(self) -> float:
        return self.spec.segment_s

    def embed_segments(self, signal: np.ndarray, hop_s: float, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """What the index builder calls: one embedding per segment every `hop_s`."""
        return embed_signal(self, signal, hop_s, batch_size)


def save_model(model: Fingerprinter, out_dir: str | Path, info: dict[str, Any] | None = None) -> str:
    """Write weights + config atomically; return the signature."""
    return save_folder(model, model.spec.to_dict(), FAMILY, out_dir, info)


def load_model(model_dir: str | Path, device: str | torch.device | None = "auto") -> LoadedModel:
    """Load a model folder, check its signature and run a dummy forward (self-check)."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    if config.get("family", FAMILY) != FAMILY:
        raise ModelError(f"{model_dir}: a {config['family']} model, not a fingerprinter")
    spec = FingerprinterSpec.from_dict(config["spec"])
    model = Fingerprinter(spec)
    signature = load_weights(model_dir, model, spec.to_dict())
    target = resolve_device(device)
    model = model.to(target).eval()
    with torch.inference_mode():
        probe = model(torch.zeros(1, spec.segment_samples, device=target))
    if probe.shape != (1, spec.embedding_dim):
        raise ModelError(f"{model_dir}: self-check gave embedding shape {tuple(probe.shape)}, expected (1, {spec.embedding_dim})")
    return LoadedModel(model, spec, signature, target, config)


@torch.inference_mode()
def embed_signal(loaded: LoadedModel, signal: np.ndarray, hop_s: float, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Embed a mono signal at the model rate in segments every `hop_s`.

    Returns (embeddings float32 (n, dim), segment start times in seconds (n,)).
    """
    spec = loaded.spec
    segment, hop = spec.segment_samples, max(1, int(round(hop_s * spec.sample_rate)))
    frames, starts = frame_windows(signal, segment, hop)
    out = np.empty((len(starts), spec.embedding_dim), dtype=np.float32)
    for begin in range(0, len(starts), batch_size):
        batch = torch.from_numpy(frames[begin : begin + batch_size]).to(loaded.device)
        out[begin : begin + len(batch)] = loaded.model(batch).float().cpu().numpy()
    return out, (starts / spec.sample_rate).astype(np.float32)
