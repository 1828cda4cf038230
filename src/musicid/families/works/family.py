"""The work identifier's declaration on the spine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from musicid.families.base import Family, Trainer
from musicid.families.works import stages


def _load(model_dir: Path, device: str) -> Any:
    from musicid.families.works.io import load_model

    return load_model(model_dir, device)


FAMILY = Family(
    name="works",
    title="work identifier: which composition a performance is a version of",
    stages=stages.STAGES,
    load_model=_load,
    summary_metrics=stages.summary_metrics,
    headline_metric="test_unseen_mAP",
    code=("src/musicid/families/works",),
    register=stages.register_workspace,
    trainers=(Trainer("works-train", "works.train", accuracy="val_mAP", loss="val_loss", prod_stage="works-train-prod"),),
    prod_heldout=lambda run_params: [f"mAP_{name}" for name in run_params.get("prod.holdout", "").split(",") if name],
)
