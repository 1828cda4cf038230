"""MLflow tracking and model registry for the pipeline and the `musicid registry` commands."""

from musicid.tracking.registry import (
    FetchedModel, GateResult, VersionInfo, check_gates, fetch, get_version, list_versions, promote, register_bundle,
)
from musicid.tracking.runs import (
    TAG_SIGNATURE, TrackingError, configure, data_version, project_root, stage_run, tracking_uri,
)

__all__ = [
    "FetchedModel", "GateResult", "TAG_SIGNATURE", "TrackingError", "VersionInfo", "check_gates", "configure",
    "data_version", "fetch", "get_version", "list_versions", "project_root", "promote", "register_bundle",
    "stage_run", "tracking_uri",
]
