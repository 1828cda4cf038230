"""MLflow runs for pipeline stages: where runs go, how they are tagged, and one-line errors.

Every stage run lands in one SQLite database at the repository root (or MLFLOW_TRACKING_URI),
also when DVC runs a queued experiment in a temporary copy: DVC sets DVC_ROOT to the real
repository there, so the URI and the artifact folder are made absolute from it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote

import yaml

from musicid.config import YAML_LOADER, TrackingConfig
from musicid.errors import MusicidError

TRACKING_DB = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
TAG_STAGE = "musicid.stage"
TAG_SIGNATURE = "musicid.model_signature"
TAG_GIT_REV = "musicid.git_rev"
TAG_DVC_EXP = "musicid.dvc_exp"
TAG_DATA_VERSION = "musicid.data_version"
TAG_FAMILY = "musicid.family"

log = logging.getLogger("musicid")


class TrackingError(MusicidError):
    """The tracking server or database cannot be used, or a registry lookup failed."""


def project_root(start: Path | None = None) -> Path:
    """The repository whose runs these are: DVC_ROOT when DVC runs us, else the nearest folder with dvc.yaml."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() or (folder / ".dvc").is_dir():
            return folder
    return here


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else an absolute `sqlite:///<repo>/mlflow.db`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / TRACKING_DB}"


def sqlite_path(uri: str) -> Path | None:
    """The database file behind a sqlite:// URI (None for servers and other stores)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri.removeprefix("sqlite:///").split("?", 1)[0]))


def _mlflow_error_types() -> tuple[type[BaseException], ...]:
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    return (MlflowException, sqlalchemy.exc.SQLAlchemyError, requests.exceptions.RequestException, OSError)


@contextlib.contextmanager
def tracking_errors(what: str) -> Iterator[None]:
    """Turn MLflow, database and connection failures into one TrackingError line."""
    try:
        yield
    except MusicidError:
        raise
    except _mlflow_error_types() as exc:
        message = str(getattr(exc, "message", None) or exc).strip().splitlines()
        raise TrackingError(f"{what} ({tracking_uri()}): {message[0] if message else type(exc).__name__}") from None


def configure(must_exist: bool = False) -> str:
    """Point MLflow at our tracking URI. Readers pass must_exist so a missing DB is not silently created."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # an unreachable server fails in seconds, not minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    for chatty in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    uri = tracking_uri()
    database = sqlite_path(uri)
    if must_exist and database is not None and not database.is_file():
        raise TrackingError(
            f"no MLflow tracking database at {database}: run `dvc repro` (it trains, evaluates and registers a model), "
            f"set MLFLOW_TRACKING_URI, or pass a model folder with --model"
        )
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """The experiment's id; created with an absolute artifact folder beside a SQLite DB."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    with tracking_errors(f"cannot open MLflow experiment {name!r}"):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        database = sqlite_path(tracking_uri())
        location = (database.parent / ARTIFACTS_DIR).resolve().as_uri() if database else None
        return client.create_experiment(name, artifact_location=location)


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def data_version(family: str, lock: Path = Path("dvc.lock"), output: str | None = None) -> str:
    """DVC's hash of a family's training shards as recorded in dvc.lock ('' when not locked yet).

    `output` names another folder (default `data/shards/<family>`); when dvc.lock holds several
    outputs inside it (one store per set), the version is a digest of their hashes.
    """
    output = output or f"data/shards/{family}"
    try:
        stages = (yaml.load(lock.read_text(), Loader=YAML_LOADER) or {}).get("stages", {})
    except (OSError, yaml.YAMLError):
        return ""
    inside = {}
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") == output:
                return str(out.get("md5", ""))
            if str(out.get("path", "")).startswith(output + "/"):
                inside[out["path"]] = str(out.get("md5", ""))
    if not inside:
        return ""
    import hashlib

    return hashlib.md5("".join(f"{k}={v};" for k, v in sorted(inside.items())).encode()).hexdigest()


def provenance_tags(stage: str, family: str = "") -> dict[str, str]:
    """Tags every run carries: stage, family, git revision, DVC experiment name, data version."""
    revision = os.environ.get("DVC_EXP_BASELINE_REV") or _git("rev-parse", "HEAD")
    tags = {
        TAG_STAGE: stage,
        TAG_GIT_REV: revision or "none",
        TAG_DVC_EXP: os.environ.get("DVC_EXP_NAME", ""),
        TAG_DATA_VERSION: data_version(family) if family else "",
    }
    if family:
        tags[TAG_FAMILY] = family
    if revision:
        tags["mlflow.source.git.commit"] = revision
    return tags


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"train": {"lr": 0.001}} → {"train.lr": "0.001"}: MLflow params are flat strings."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return flat


def find_run(experiment_id: str, stage: str, signature: str) -> Any | None:
    """The newest finished run of `stage` for a model signature (how evaluate/report find their train run)."""
    import mlflow

    with tracking_errors("cannot search MLflow runs"):
        runs = mlflow.search_runs(
            [experiment_id], output_format="list", max_results=1, order_by=["attributes.start_time DESC"],
            filter_string=f"tags.`{TAG_STAGE}` = '{stage}' and tags.`{TAG_SIGNATURE}` = '{signature}'",
        )
    return runs[0] if runs else None


@contextlib.contextmanager
def _ending(what: str) -> Iterator[None]:
    """End the active MLflow run with the block: FINISHED, or FAILED when the block raised (as MLflow's
    own `with run:` does). A store or server that cannot be reached to close it is one TrackingError
    line, unless the block already failed: its error (often the same lost server) is the one to show."""
    import mlflow

    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    finally:
        try:
            with tracking_errors(f"cannot end {what}"):
                mlflow.end_run(status)
        except TrackingError:
            if status == "FINISHED":
                raise


class StageRun:
    """What a stage logs through; a disabled tracker gets the same calls and does nothing."""

    def __init__(self, run: Any | None) -> None:
        self.run = run

    @property
    def run_id(self) -> str | None:
        return self.run.info.run_id if self.run else None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.run:
            import mlflow

            with tracking_errors("cannot log metrics"):
                mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_epoch(self, row: dict[str, float]) -> None:
        """One training history row as metrics at step `epoch` (what every family's loop reports)."""
        self.log_metrics({k: v for k, v in row.items() if k != "epoch" and v is not None}, step=int(row["epoch"]))

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        if self.run and Path(path).exists():
            import mlflow

            with tracking_errors("cannot log artifact"):
                if Path(path).is_dir():
                    mlflow.log_artifacts(str(path), folder)
                else:
                    mlflow.log_artifact(str(path), folder)

    @contextlib.contextmanager
    def child(self, name: str, tags: dict[str, str] | None = None) -> Iterator["StageRun"]:
        """A nested run under this one (one fold of production training); inert when tracking is off."""
        if not self.run:
            yield StageRun(None)
            return
        import mlflow

        inherited = {k: v for k, v in self.run.data.tags.items() if k.startswith("musicid.")}
        with tracking_errors(f"cannot start the nested MLflow run {name}"):
            nested = mlflow.start_run(experiment_id=self.run.info.experiment_id, run_name=f"{self.run.info.run_name} {name}",
                                      nested=True, tags=inherited | (tags or {}))
        with _ending(f"the nested MLflow run {name}"):
            yield StageRun(nested)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.run:
            import mlflow

            with tracking_errors("cannot set tags"):
                mlflow.set_tags(tags)


@contextlib.contextmanager
def stage_run(
    stage: str, cfg: TrackingConfig, params: dict[str, Any], signature: str | None = None,
    parent_stage: str | None = None, system_metrics: bool = False, family: str = "",
) -> Iterator[StageRun]:
    """An MLflow run for one stage execution, tagged with provenance; nested under the model's train run.

    A family's runs go to the experiment `<tracking.experiment>-<family>` (musicid-works, ...).
    """
    if not cfg.enabled or os.environ.get("RANK", "0") != "0":  # DDP: rank 0 alone logs (training/distributed.py)
        yield StageRun(None)
        return
    import mlflow

    configure()
    experiment = f"{cfg.experiment}-{family}" if family else cfg.experiment
    experiment_id = ensure_experiment(experiment)
    tags = provenance_tags(stage, family) | ({TAG_SIGNATURE: signature} if signature else {})
    parent = find_run(experiment_id, parent_stage, signature) if parent_stage and signature else None
    label = tags[TAG_DVC_EXP] or (tags[TAG_GIT_REV][:7] if tags[TAG_GIT_REV] != "none" else "workspace")
    if system_metrics:
        mlflow.set_system_metrics_sampling_interval(cfg.system_metrics_interval_s)
    with tracking_errors(f"cannot start the MLflow run for {stage}"):
        active = mlflow.start_run(
            experiment_id=experiment_id, run_name=f"{stage} {label}", tags=tags,
            parent_run_id=parent.info.run_id if parent else None, log_system_metrics=system_metrics,
        )
        mlflow.log_params(flatten(params))
    with _ending(f"the MLflow run for {stage}"):
        log.info(f"mlflow: {stage} run {active.info.run_id} in experiment {experiment!r} ({tracking_uri()})")
        yield StageRun(active)
