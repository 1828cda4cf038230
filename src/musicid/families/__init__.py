"""The model families on the spine, by name; model folders load through the family they record.

    FAMILIES["works"].stages        # {"split": fn, "features": fn, "train": fn, ...}
    load_model("models/works")      # dispatches on config.json's "family", self-checks the model
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from musicid.errors import ConfigError
from musicid.families.base import Family

FAMILY_NAMES = ("fingerprint", "works", "pitch")


def get_family(name: str) -> Family:
    if name not in FAMILY_NAMES:
        raise ConfigError(f"unknown model family {name!r}; allowed: {', '.join(FAMILY_NAMES)}")
    return importlib.import_module(f"musicid.families.{name}.family").FAMILY


class _Families(dict):
    """Lazy name → Family mapping: a family's modules are imported on first use."""

    def __missing__(self, name: str) -> Family:
        family = get_family(name)
        self[name] = family
        return family

    def __contains__(self, name: object) -> bool:
        return name in FAMILY_NAMES

    def __iter__(self):
        return iter(FAMILY_NAMES)

    def __len__(self) -> int:
        return len(FAMILY_NAMES)

    def values(self):  # type: ignore[override]
        return [self[name] for name in FAMILY_NAMES]

    def items(self):  # type: ignore[override]
        return [(name, self[name]) for name in FAMILY_NAMES]


FAMILIES: dict[str, Family] = _Families()


def load_model(model_dir: str | Path, device: str = "auto") -> Any:
    """Load any family's model folder (self-checked), dispatching on the family it records."""
    from musicid.models.io import model_family  # torch: imported only when a model is loaded

    return FAMILIES[model_family(model_dir)].load_model(Path(model_dir), device)


__all__ = ["FAMILIES", "FAMILY_NAMES", "Family", "get_family", "load_model"]
