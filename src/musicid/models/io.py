"""Model folders, for every family: weights + config.json, signed, written atomically.

A model folder holds `model.pt` (a plain state_dict, loaded with weights_only=True) and
`config.json` (`family`, the network `spec`, the `signature` and training provenance). The
signature is a hash of spec + weights; indexes, evaluations and registry versions made with a
model record it, and consumers refuse a mismatch naming both. Which family a folder belongs to is
read from its config (`musicid.families.load_model` dispatches on it); this module knows none.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from musicid.errors import MusicidError
from musicid.fsutil import atomic_dir, read_json, write_json

WEIGHTS = "model.pt"
CONFIG = "config.json"
DEFAULT_FAMILY = "fingerprint"  # folders written before families existed

if TYPE_CHECKING:  # torch is imported where weights are touched: registry commands read configs only
    import torch


class ModelError(MusicidError):
    """A model folder is missing, incomplete or does not match what it claims to be."""


def weights_signature(spec: dict[str, Any], state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the spec and the exact weights: artifacts built by a model record this."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_model(model: torch.nn.Module, spec: dict[str, Any], family: str, out_dir: str | Path,
               info: dict[str, Any] | None = None) -> str:
    """Write weights + config atomically; return the signature."""
    import torch

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    signature = weights_signature(spec, state)
    with atomic_dir(out_dir) as staging:
        torch.save(state, staging / WEIGHTS)
        write_json(staging / CONFIG, {"family": family, "spec": spec, "signature": signature, **(info or {})})
    return signature


def read_config(model_dir: str | Path) -> dict[str, Any]:
    """config.json of a model folder (ModelError when the folder is not one)."""
    model_dir = Path(model_dir)
    if not (model_dir / WEIGHTS).is_file() or not (model_dir / CONFIG).is_file():
        raise ModelError(f"{model_dir}: not a model folder (needs {WEIGHTS} and {CONFIG}); run `dvc repro` or `dvc pull`")
    return read_json(model_dir / CONFIG)


def model_family(model_dir: str | Path) -> str:
    return read_config(model_dir).get("family", DEFAULT_FAMILY)


@dataclass
class ModelFolder:
    path: Path
    config: dict[str, Any]

    @property
    def spec(self) -> dict[str, Any]:
        return self.config["spec"]

    @property
    def family(self) -> str:
        return self.config.get("family", DEFAULT_FAMILY)


def load_weights(model_dir: str | Path, model: torch.nn.Module, spec: dict[str, Any]) -> str:
    """Load model.pt into `model` and check it against config.json's signature; return it."""
    import torch

    model_dir = Path(model_dir)
    config = read_config(model_dir)
    try:
        model.load_state_dict(torch.load(model_dir / WEIGHTS, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError) as exc:
        raise ModelError(f"{model_dir / WEIGHTS}: cannot load weights: {str(exc).splitlines()[0]}") from None
    signature = weights_signature(spec, model.state_dict())
    if signature != config.get("signature"):
        raise ModelError(f"{model_dir}: weights signature {signature} differs from config.json's {config.get('signature')}")
    return signature
