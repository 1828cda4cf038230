"""The pitch family's declaration on the spine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from musicid.families.base import Family, Trainer
from musicid.families.pitch import stages


def _prod_heldout(run_params: dict[str, str]) -> list[str]:
    """pitch-train-prod's per-epoch held-out figures: test F1 of each set its networks train on."""
    from musicid.families.pitch.prod import heldout_metrics

    networks = run_params.get("prod.networks", "").split(",")
    sets = [s for kind in networks for s in run_params.get(f"{kind}.sets", "").split(",") if s]
    return heldout_metrics(list(dict.fromkeys(sets)))


def _load(model_dir: Path, device: str) -> Any:
    from musicid.families.pitch.io import load_model

    return load_model(model_dir, device)


FAMILY = Family(
    name="pitch",
    title="pitch: which pitches sound in each window (confidence and energy per log-frequency bin)",
    stages=stages.STAGES,
    load_model=_load,
    summary_metrics=stages.summary_metrics,
    headline_metric="sanity_within_50c",
    code=("src/musicid/families/pitch",),
    register=stages.register_workspace,
    more_registries=lambda params: [params.pitch_transcribe.registry],  # musicid-transcriber
    trainers=(
        Trainer("pitch-train", "pitch.train", accuracy="val_polyphonic_f1", loss="val_loss"),
        Trainer("pitch-onset-train", "pitch_onset", accuracy="eval_f1", loss="eval_loss", prod_stage="pitch-train-prod"),
        Trainer("pitch-frame-train", "pitch_frame", accuracy="eval_f1", loss="eval_loss", prod_stage="pitch-train-prod"),
    ),
    prod_heldout=_prod_heldout,
)
