"""A tuning grid: params.yaml keys and the values to try, crossed, each point run once per seed.

GRID.yaml (any family's params, dotted as `dvc exp run -S` names them):

    params:
      works.train.lr: [0.001, 0.002]
      works.model.dim: [32, 64]
    seed_keys: [works.train.seed]   # optional: by default the seed of every training stage whose
                                    # params section a grid key falls in (families declare them)

Every point is validated against params.yaml before anything is queued, so a typo or a value out
of range fails with the key and the allowed values, not in the middle of a sweep.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from musicid.config import YAML_LOADER, parse_params
from musicid.errors import ConfigError


@dataclass(frozen=True)
class Grid:
    name: str
    params: dict[str, list[Any]]  # dotted params key → values, in the file's order
    seed_keys: tuple[str, ...]

    def points(self) -> list[dict[str, Any]]:
        keys = list(self.params)
        return [dict(zip(keys, values)) for values in itertools.product(*self.params.values())]


def point_label(point: dict[str, Any]) -> str:
    """`works.train.lr=0.001 works.model.dim=32`: how a point is tagged, printed and grouped."""
    return " ".join(f"{key}={format_value(value)}" for key, value in point.items())


def format_value(value: Any) -> str:
    """A value as `dvc exp run -S key=value` parses it back (YAML): lists and bools as JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))  # no spaces: labels split on them


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"grid key {key}: {part} is a value in params.yaml, not a section")
        node = child
    node[parts[-1]] = value


def get_dotted(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"params.yaml has no key {key}")
        node = node[part]
    return node


def apply_point(base: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    """params.yaml's mapping with a point's values set (a deep copy)."""
    raw = json.loads(json.dumps(base))
    for key, value in point.items():
        set_dotted(raw, key, value)
    return raw


def default_seed_keys(keys: list[str]) -> tuple[str, ...]:
    """The seed of each family trainer whose params section shares a top-level section with a grid key."""
    from musicid.families import FAMILIES

    tops = {key.split(".")[0] for key in keys}
    found = [t.seed_key for family in FAMILIES.values() for t in family.trainers if t.section.split(".")[0] in tops]
    if not found:
        raise ConfigError(f"no training stage reads {', '.join(sorted(tops))}: name the seed params as seed_keys in the grid")
    return tuple(found)


def raw_params(params_path: str | Path) -> dict[str, Any]:
    """params.yaml as a plain mapping (points are set on it, then validated as a whole)."""
    return yaml.load(Path(params_path).read_text(), Loader=YAML_LOADER) or {}


def load_grid(path: str | Path, params_path: str | Path = "params.yaml") -> Grid:
    """Read and validate GRID.yaml against params.yaml; ConfigError names the offending key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: grid file not found")
    try:
        raw = yaml.load(path.read_text(), Loader=YAML_LOADER) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    unknown = set(raw) - {"params", "seed_keys", "name"} if isinstance(raw, dict) else {"<top level>"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: params, seed_keys, name")
    grid_params = raw.get("params")
    if not isinstance(grid_params, dict) or not grid_params:
        raise ConfigError(f"{path}: `params` must map params.yaml keys to lists of values")
    for key, values in grid_params.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: params.{key} must be a non-empty list of values (got {values!r})")
    seed_keys = tuple(raw.get("seed_keys") or default_seed_keys(list(grid_params)))
    name = str(raw.get("name") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,40}", name):
        raise ConfigError(f"{path}: grid name {name!r}: letters, digits, - and _ only (it names the DVC experiments)")
    grid = Grid(name, dict(grid_params), seed_keys)
    base = raw_params(params_path)
    for key in seed_keys:
        if not isinstance(get_dotted(base, key), int):
            raise ConfigError(f"{path}: seed key {key} is not an integer in {params_path}")
    for point in grid.points():
        parse_params(apply_point(base, point), source=f"{path} ({point_label(point)})")
    return grid
