"""What a model family declares so the spine can run, register, load and serve it.

A family is a package under `musicid/families/<name>/` that exposes one `FAMILY = Family(...)`.
The spine (ingest, splits, store, training loop, index, tracking, registry, reports) never names
a family: stages, the registry, model loading and the CLI all go through this declaration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from musicid.config import Params, RegistryConfig, Section
from musicid.layout import FamilyLayout, family_layout

StageFn = Callable[..., None]  # stage(params, workers=None) → writes its outputs


@dataclass(frozen=True)
class Trainer:
    """One training stage of a family, as experiment tools read it (tuning grids, summaries)."""

    stage: str  # its DVC stage and MLflow stage tag, e.g. works-train
    section: str  # dotted params section of its training knobs; `<section>.seed`, `<section>.patience`
    accuracy: str  # per-epoch metric it selects the best epoch by (higher is better)
    loss: str  # per-epoch loss read beside it (a validation loss where the family has one)
    prod_stage: str = ""  # the production stage that runs the same loop (`<family>-train-prod`), if any

    @property
    def seed_key(self) -> str:
        return f"{self.section}.seed"

    @property
    def patience_key(self) -> str:
        return f"{self.section}.patience"


@dataclass(frozen=True)
class Family:
    name: str  # package name, params section, stage prefix and artifact folder
    title: str  # what it answers, for help texts and model cards
    stages: dict[str, StageFn]  # in pipeline order; dvc.yaml runs `musicid stage <name>-<stage>`
    load_model: Callable[[Path, str], Any]  # (model folder, device) → loaded, self-checked model
    summary_metrics: Callable[[dict[str, Any]], dict[str, float]]  # eval metrics.json → flat registry metrics
    headline_metric: str  # the accuracy figure `registry compare` ranks by
    code: tuple[str, ...] = field(default_factory=tuple)  # its own source folder: its stages depend on files there
    register: Callable[[Params], str] | None = None  # `musicid registry register`: workspace model → registry
    more_registries: Callable[[Params], list[RegistryConfig]] | None = None  # further registered models (pitch: the transcriber)
    trainers: tuple[Trainer, ...] = ()  # its training stages, for `musicid exp tune` / `exp summary`
    prod_heldout: Callable[[dict[str, str]], list[str]] | None = None  # its -train-prod run's params → the
    # per-epoch held-out figures every phase logs (what `musicid exp best-epochs` ranks)

    @property
    def layout(self) -> FamilyLayout:
        return family_layout(self.name)

    def params(self, params: Params) -> Section:
        return params.family(self.name)

    def registry(self, params: Params) -> RegistryConfig:
        """The family's main registered model (what --family alone names)."""
        return self.params(params).registry  # type: ignore[attr-defined]

    def registries(self, params: Params) -> list[RegistryConfig]:
        """Every model the family registers, the main one first."""
        return [self.registry(params), *(self.more_registries(params) if self.more_registries else [])]

    def stage_names(self) -> list[str]:
        return [f"{self.name}-{stage}" for stage in self.stages]
