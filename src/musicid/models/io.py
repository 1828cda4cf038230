"""Save, load and run a trained fingerprinter: the one way every consumer gets embeddings.

A model folder holds `model.pt` (a plain state_dict, loaded with weights_only=True) and
`config.json` (the network spec, the signature and training provenance). The signature is a hash
of spec + weights; indexes and reports built with a model record it, and consumers refuse a
mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicid.audio.framing import frame_windows
from musicid.device import resolve_device
from musicid.errors import MusicidError
from musicid.fsutil import atomic_dir, read_json, write_json
from musicid.models.fingerprinter import Fingerprinter, FingerprinterSpec, model_signature

WEIGHTS = "model.pt"
CONFIG = "config.json"


class ModelError(MusicidError):
    """A model folder is missing, incomplete or does not match what it claims to be."""


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


def save_model(model: Fingerprinter, out_dir: str | Path, info: dict[str, Any] | None = None) -> str:
    """Write weights + config atomically; return the signature."""
    signature = model_signature(model)
    with atomic_dir(out_dir) as staging:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save(state, staging / WEIGHTS)
        write_json(staging / CONFIG, {"spec": model.spec.to_dict(), "signature": signature, **(info or {})})
    return signature


def load_model(model_dir: str | Path, device: str | torch.device | None = "auto") -> LoadedModel:
    """Load a model folder, check its signature and run a dummy forward (self-check)."""
    model_dir = Path(model_dir)
    if not (model_dir / WEIGHTS).is_file() or not (model_dir / CONFIG).is_file():
        raise ModelError(f"{model_dir}: not a model folder (needs {WEIGHTS} and {CONFIG}); run `dvc repro train` or `dvc pull`")
    config = read_json(model_dir / CONFIG)
    spec = FingerprinterSpec.from_dict(config["spec"])
    model = Fingerprinter(spec)
    try:
        model.load_state_dict(torch.load(model_dir / WEIGHTS, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError) as exc:
        raise ModelError(f"{model_dir / WEIGHTS}: cannot load weights: {str(exc).splitlines()[0]}") from None
    signature = model_signature(model)
    if signature != config.get("signature"):
        raise ModelError(f"{model_dir}: weights signature {signature} differs from config.json's {config.get('signature')}")
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
