"""Every artifact path, common and per family, in one place (dvc.yaml agrees; a test checks).

Common data (raw archive, ingested catalog, manifests) is shared by every family; each family's
artifacts live under its own name:

    data/splits/<family>/   data/shards/<family>/   models/<family>/   data/index/<family>/   reports/<family>/
    data/labelled/<family>/   data/shards/<family>-notes/   (a family's labelled audio and the stores cut from it)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RAW_ARCHIVE = Path("data/raw/synthetic.tar.gz")
INGESTED = Path("data/ingested")
CATALOG = INGESTED / "catalog.json"
INGEST_REPORT = Path("reports/ingest")
MANIFESTS = Path("data/manifests")
TUNE_REPORTS = Path("reports/tune")  # `musicid exp tune` records and `exp summary` tables, per grid (untracked)
STATE = Path(".musicid")  # untracked working state (resumable checkpoints)
STAGE_LOCKS = STATE / "locks"  # one lock per stage: the same stage never runs twice at once in a workspace
STAGING_ROOTS = (Path("data"), Path("models"), Path("reports"))  # where stages write: swept for dead runs' staging


@dataclass(frozen=True)
class FamilyLayout:
    """Where one family's stages read and write."""

    family: str

    @property
    def manifests(self) -> Path:
        """A family's own splits (the common ones are MANIFESTS)."""
        return Path("data/splits") / self.family

    @property
    def shards(self) -> Path:
        return Path("data/shards") / self.family

    @property
    def labelled(self) -> Path:
        """A family's own labelled source audio (e.g. rendered pieces + their note label files)."""
        return Path("data/labelled") / self.family

    @property
    def note_shards(self) -> Path:
        """Window stores cut from the labelled audio (beside `shards`, which another stage owns whole)."""
        return Path("data/shards") / f"{self.family}-notes"

    @property
    def model(self) -> Path:
        return Path("models") / self.family

    def network(self, name: str) -> Path:
        """A family's further network (e.g. the pitch family's onset and frame networks): models/<family>-<name>."""
        return Path("models") / f"{self.family}-{name}"

    @property
    def prod_model(self) -> Path:
        """The production model (stage <family>-train-prod): trained on everything but the held-out sets."""
        return self.network("prod")

    @property
    def index(self) -> Path:
        return Path("data/index") / self.family

    @property
    def reports(self) -> Path:
        return Path("reports") / self.family

    @property
    def train_report(self) -> Path:
        return self.reports / "train"

    @property
    def prod_report(self) -> Path:
        return self.reports / "train-prod"

    @property
    def eval_report(self) -> Path:
        return self.reports / "eval"

    @property
    def checkpoints(self) -> Path:
        return STATE / "checkpoints" / self.family

    @property
    def prod_state(self) -> Path:
        """Finished phases and the epoch checkpoint of production training (what a rerun resumes from)."""
        return STATE / "prod" / self.family

    @property
    def model_card(self) -> Path:
        return self.reports / "model-card.md"

    @property
    def benchmark_report(self) -> Path:
        return self.reports / "benchmark-report.md"

    @property
    def release_checklist(self) -> Path:
        return self.reports / "release-checklist.md"

    def named_model_card(self, name: str) -> Path:
        """The card of a family's further registered model (e.g. reports/pitch/transcriber-model-card.md)."""
        return self.reports / f"{name}-model-card.md"

    def named_release_checklist(self, name: str) -> Path:
        return self.reports / f"{name}-release-checklist.md"

    def store(self, split: str) -> Path:
        return self.shards / f"{split}.zarr"


def family_layout(family: str) -> FamilyLayout:
    return FamilyLayout(family)
