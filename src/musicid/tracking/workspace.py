"""`musicid registry register` for any family: the workspace's model + index with its evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from musicid.config import TrackingConfig
from musicid.errors import ConfigError, NotReadyError
from musicid.fsutil import read_json


def register_workspace(
    family: str, tracking: TrackingConfig, logged: dict[str, Any], model_dir: Path, eval_dir: Path, index_dir: Path | None,
    summary: Callable[[dict[str, Any]], dict[str, float]], register: Callable[[dict[str, float], dict[str, str]], str],
) -> str:
    """Refuse a stale evaluation (another model's), then register in a run of its own; the version."""
    from musicid.tracking.runs import stage_run

    if not tracking.enabled:
        raise ConfigError("params.yaml: tracking.enabled is false; enable it to use the registry")
    needed = [model_dir / "config.json", eval_dir / "metrics.json"] + ([index_dir / "meta.json"] if index_dir else [])
    for path in needed:
        if not path.is_file():
            raise NotReadyError(f"{path} not found: run `dvc repro {family}-evaluate` (or `dvc pull`) first")
    signature = read_json(model_dir / "config.json")["signature"]
    evaluation = read_json(eval_dir / "metrics.json")
    if evaluation.get("model_signature") != signature:
        raise NotReadyError(f"{eval_dir}/metrics.json evaluates model {evaluation.get('model_signature')}, "
                            f"not {signature} in {model_dir}: run `dvc repro {family}-evaluate` first")
    with stage_run(f"{family}-register", tracking, logged, signature=signature, parent_stage=f"{family}-train",
                   family=family) as run:
        return register(summary(evaluation), run.run.data.tags)
