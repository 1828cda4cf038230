"""The MLflow run of a production training stage (`<family>-train-prod`), the same for every family."""

from __future__ import annotations

from typing import Any, Callable

from musicid.config import Params
from musicid.fsutil import atomic_dir
from musicid.layout import family_layout
from musicid.tracking.runs import TAG_SIGNATURE, StageRun, stage_run


def run_prod_stage(family: str, params: Params, logged: dict[str, Any],
                   train: Callable[[StageRun, Any], dict[str, Any]]) -> dict[str, Any]:
    """`train(run, report_dir)` inside the stage's run (phases nest under it); the report folder is
    published only when training finishes. Tags the model signature, logs the final figures."""
    layout = family_layout(family)
    with stage_run(f"{family}-train-prod", params.tracking, logged | {"deterministic": params.train.deterministic},
                   system_metrics=params.tracking.system_metrics, family=family) as run:
        with atomic_dir(layout.prod_report) as report:
            summary = train(run, report)
        run.set_tags({TAG_SIGNATURE: summary["signature"]})
        run.log_metrics({f"final_{k}": v for k, v in summary["final"].items()})
        run.log_artifact(layout.prod_report, "reports/train-prod")
        for config in sorted(layout.prod_model.rglob("config.json")):  # one per network the stage trains
            sub = config.parent.relative_to(layout.prod_model).as_posix()
            run.log_artifact(config, "model" if sub == "." else f"model/{sub}")
    final = ", ".join(f"{k} {v:.3f}" for k, v in summary["final"].items())
    print(f"{family}-train-prod: {summary['folds']} folds + final run; final model ({final}), "
          f"signature {summary['signature']} → {layout.prod_model}; best epochs: {layout.prod_report / 'best-epochs.md'}")
    return summary
