"""The fingerprinter's declaration on the spine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from musicid.families.base import Family, Trainer
from musicid.families.fingerprint import stages


def _load(model_dir: Path, device: str) -> Any:
    from musicid.families.fingerprint.io import load_model

    return load_model(model_dir, device)


def _summary(metrics: dict[str, Any]) -> dict[str, float]:
    from musicid.families.fingerprint.evaluate import key_metrics

    return key_metrics(metrics)


FAMILY = Family(
    name="fingerprint",
    title="audio fingerprinter: which recording a clip comes from, and where",
    stages=stages.STAGES,
    load_model=_load,
    summary_metrics=_summary,
    headline_metric="main_top1",
    code=("src/musicid/families/fingerprint",),
    register=stages.register_workspace,
    trainers=(Trainer("fingerprint-train", "fingerprint.train", accuracy="val_top1", loss="val_loss",
                     prod_stage="fingerprint-train-prod"),),
    prod_heldout=lambda run_params: ["top1_test"],  # the test split's windows (fingerprint/prod.py HELD_OUT)
)
