"""Load and run a trained work identifier: audio → CQT → embedding, the one path every consumer uses.

The folder format and signature are the spine's (`musicid.models.io`). Loading rebuilds the network
from its spec, checks the signature and self-checks a forward pass; the same loaded model embeds
queries (`embed_path`, `embed_signal`) and, through `embed_segments`, reference performances for
the spine's FAISS index (one vector per performance, at offset 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicid.config import WorksFeaturesConfig
from musicid.device import resolve_device
from musicid.errors import MusicidError
from musicid.families.works.model import WorkEncoder, WorkSpec
from musicid.models.io import ModelError, load_weights, read_config
from musicid.models.io import save_model as save_folder

FAMILY = "works"


class QueryTooShortError(MusicidError):
    """A query is shorter than the shortest chunk the model was trained on."""


def save_model(model: WorkEncoder, out_dir: str | Path, info: dict[str, Any] | None = None) -> str:
    return save_folder(model, model.spec.to_dict(), FAMILY, out_dir, info)


@dataclass
class LoadedWorkModel:
    model: WorkEncoder
    spec: WorkSpec
    signature: str
    device: torch.device
    info: dict[str, Any]

    # the index builder's Embedder protocol
    @property
    def embedding_dim(self) -> int:
        return self.spec.embedding_dim

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    segment_s: float = 0.0  # whole performances

    @property
    def features(self) -> WorksFeaturesConfig:
        return WorksFeaturesConfig(sample_rate=self.spec.sample_rate, n_bins=self.spec.n_bins,
                                   bins_per_octave=self.spec.bins_per_octave, fmin_hz=self.spec.fmin_hz,
                                   hop_s=self.spec.hop_s)

    def extractor(self) -> Any:
        from musicid.families.works.features import CQTExtractor

        if not hasattr(self, "_extractor"):
            self._extractor = CQTExtractor(self.features, self.device)
        return self._extractor

    @torch.inference_mode()
    def embed_frames(self, frames: np.ndarray, what: str = "query") -> np.ndarray:
        if len(frames) < self.spec.min_frames:
            raise QueryTooShortError(
                f"{what}: {len(frames) * self.spec.hop_s:.1f} s is shorter than the model's shortest chunk "
                f"({self.spec.min_seconds:.1f} s = {self.spec.min_frames} frames at {self.spec.hop_s} s)")
        x = torch.from_numpy(np.asarray(frames, dtype=np.float32))[None].to(self.device)
        return self.model(x).float().cpu().numpy()[0]

    def embed_signal(self, signal: np.ndarray, what: str = "query") -> np.ndarray:
        """Mono signal at spec.sample_rate → unit embedding."""
        return self.embed_frames(self.extractor()(signal), what)

    def embed_path(self, path: str | Path, max_duration_s: float = 300.0) -> np.ndarray:
        return self.analyse_path(path, max_duration_s)[0]

    def analyse_path(self, path: str | Path, max_duration_s: float = 300.0,
                     chroma_recipe: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(unit embedding, chroma frames) from one decode and one CQT: what identify aligns on.

        chroma_recipe: how the references' chroma was made (an index's `index_chroma_recipe`); default
        the alignment defaults.
        """
        from musicid.config import WorksRerankConfig
        from musicid.families.works.align import pitch_classes
        from musicid.families.works.features import performance_signal

        signal = performance_signal(path, self.features.model_copy(update={"max_duration_s": max_duration_s}))
        frames = self.extractor()(signal)
        recipe = chroma_recipe if chroma_recipe is not None else WorksRerankConfig()
        return self.embed_frames(frames, str(path)), pitch_classes(frames, self.features.bins_per_octave, recipe)

    def embed_segments(self, signal: np.ndarray, hop_s: float, batch_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
        frames = self.extractor()(signal)
        if len(frames) < self.spec.min_frames:  # references shorter than a chunk are padded, not refused
            frames = np.pad(frames, ((0, self.spec.min_frames - len(frames)), (0, 0)))
        return self.embed_frames(frames)[None], np.zeros(1, dtype=np.float32)


def load_model(model_dir: str | Path, device: str | torch.device | None = "auto") -> LoadedWorkModel:
    """Load a works model folder, check its signature and self-check a forward pass."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    if config.get("family") != FAMILY:
        raise ModelError(f"{model_dir}: a {config.get('family', 'fingerprint')} model, not a work identifier")
    spec = WorkSpec.from_dict(config["spec"])
    model = WorkEncoder(spec)
    signature = load_weights(model_dir, model, spec.to_dict())
    target = resolve_device(device)
    model = model.to(target).eval()
    with torch.inference_mode():
        probe = model(torch.rand(2, spec.min_frames, spec.n_bins, generator=torch.Generator().manual_seed(0)).to(target))
    if probe.shape != (2, spec.embedding_dim) or not torch.isfinite(probe).all():
        raise ModelError(f"{model_dir}: self-check gave {tuple(probe.shape)} (finite: {bool(torch.isfinite(probe).all())}), "
                         f"expected finite (2, {spec.embedding_dim})")
    return LoadedWorkModel(model, spec, signature, target, config)
