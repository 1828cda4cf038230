"""`musicid exp best-epochs RUN`: the best epochs of a production training run, read back from MLflow.

A `<family>-train-prod` run has one nested run per phase (tag `musicid.phase`: fold-1 … final), each
logging its held-out sets' figures every epoch. This ranks every epoch of every phase per held-out
set and by their average (phase, epoch, metric, time elapsed since the run began), as CoverHunterMPS's
production log report does, from the tracking server rather than from a log file. A stage that
trains several networks (pitch: onset, frame) tags each phase with its network
(`musicid.network`): each network is ranked on its own.
"""

from __future__ import annotations

from typing import Any

from musicid.errors import MusicidError
from musicid.training.kfold import FINAL, TAG_NETWORK, TAG_PHASE, rank_epochs


class BestEpochsError(MusicidError):
    """No production run to report on."""


def _phase_order(name: str) -> tuple[int, int]:
    return (1, 0) if name == FINAL else (0, int(name.rsplit("-", 1)[-1]) if name.rsplit("-", 1)[-1].isdigit() else 0)


def find_prod_run(ref: str | None) -> Any:
    """A run id, a DVC experiment name, or (None) the newest finished production run of any family."""
    import mlflow

    from musicid.tracking.runs import TAG_DVC_EXP, TAG_STAGE, configure, tracking_errors

    configure(must_exist=True)
    with tracking_errors("cannot read the production runs"):
        if ref:
            try:
                return mlflow.get_run(ref)
            except Exception:  # noqa: BLE001  (not a run id: try it as an experiment name)
                pass
        runs = mlflow.search_runs(search_all_experiments=True, output_format="list", order_by=["attributes.start_time DESC"],
                                  filter_string="attributes.status = 'FINISHED'" + (
                                      f" and tags.`{TAG_DVC_EXP}` = '{ref}'" if ref else ""))
    runs = [r for r in runs if r.data.tags.get(TAG_STAGE, "").endswith("-train-prod") and TAG_PHASE not in r.data.tags]
    if not runs:
        raise BestEpochsError(f"no finished production training run{f' {ref!r}' if ref else ''} in MLflow: "
                              "`dvc repro works-train-prod` makes one")
    return runs[0]


def _held_out(run: Any) -> list[str]:
    """The per-epoch held-out figures of the run's family (each family declares them)."""
    from musicid.families import FAMILIES, FAMILY_NAMES
    from musicid.tracking.runs import TAG_FAMILY

    family = run.data.tags.get(TAG_FAMILY, "")
    declared = FAMILIES[family].prod_heldout if family in FAMILY_NAMES else None
    if declared is None:
        raise BestEpochsError(f"run {run.info.run_id}: family {family!r} declares no production training")
    return declared(dict(run.data.params))


def epoch_rows(run: Any) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Per network ("" for a one-network stage), every epoch of every phase of `run` in order
    (elapsed: cumulative training seconds of that network); the held-out metrics."""
    import mlflow

    from musicid.tracking.runs import tracking_errors

    client = mlflow.MlflowClient()
    held = _held_out(run)
    with tracking_errors("cannot read the production run's phases"):
        children = mlflow.search_runs([run.info.experiment_id], output_format="list",
                                      filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
        children = [c for c in children if TAG_PHASE in c.data.tags]
        order = {network: i for i, network in enumerate(dict.fromkeys(
            c.data.tags.get(TAG_NETWORK, "") for c in sorted(children, key=lambda c: c.info.start_time)))}
        children.sort(key=lambda c: (order[c.data.tags.get(TAG_NETWORK, "")], _phase_order(c.data.tags[TAG_PHASE])))
        rows: dict[str, list[dict[str, Any]]] = {}
        elapsed: dict[str, float] = {}
        for child in children:
            network = child.data.tags.get(TAG_NETWORK, "")
            series: dict[int, dict[str, Any]] = {}
            for key in ("seconds", *held):
                for m in client.get_metric_history(child.info.run_id, key):
                    series.setdefault(m.step, {})[key] = m.value
            for epoch in sorted(series):
                elapsed[network] = elapsed.get(network, 0.0) + float(series[epoch].get("seconds", 0.0))
                rows.setdefault(network, []).append({"phase": child.data.tags[TAG_PHASE], "epoch": epoch,
                                                     **series[epoch], "elapsed_s": round(elapsed[network], 1)})
    if not rows:
        raise BestEpochsError(f"run {run.info.run_id} has no phase runs with per-epoch metrics")
    return rows, [m for m in held if any(m in r for network_rows in rows.values() for r in network_rows)]


def best_epochs(ref: str | None, top: int = 5) -> tuple[Any, dict[str, dict[str, list[dict[str, Any]]]], list[str]]:
    """The run, per network ("" for a one-network stage) its ranked epochs, and the held-out metrics."""
    run = find_prod_run(ref)
    rows, metrics = epoch_rows(run)
    return run, {network: rank_epochs(network_rows, metrics, top) for network, network_rows in rows.items()}, metrics
