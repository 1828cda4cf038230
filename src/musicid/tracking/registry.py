"""The model registry: register any family's bundle, resolve `models:/` URIs, gate promotions.

A registered version carries the weights, config and (by default) the FAISS index, tagged with
the model signature, provenance and its evaluation's key metrics (`metric.<name>` tags). Those
tags are what `musicid registry list` shows and what promotion gates check.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicid.config import GatesConfig, RegistryConfig
from musicid.fsutil import read_json, write_json
from musicid.models.io import DEFAULT_FAMILY
from musicid.tracking.runs import TAG_SIGNATURE, TrackingError, configure, tracking_errors
from musicid.tracking.selfcheck import KNOWN_ANSWER_TAG, SELFCHECK_ARTIFACT, encode_known_answer

METRIC_TAG = "metric."
MODEL_ARTIFACT = "model"  # names of the pyfunc bundle's artifacts (musicid.families.fingerprint.pyfunc reads them)
INDEX_ARTIFACT = "index"
SETTINGS_ARTIFACT = "settings"
TAG_BUNDLE = "musicid.bundle"
URI_PATTERN = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class GateResult:
    metric: str
    kind: str  # "min" or "max"
    threshold: float
    value: float | None

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.threshold if self.kind == "min" else self.value <= self.threshold

    def describe(self) -> str:
        op = ">=" if self.kind == "min" else "<="
        shown = "not measured" if self.value is None else f"{self.value:g}"
        return f"{self.metric} {shown} (needs {op} {self.threshold:g})"


def check_gates(metrics: dict[str, float], gates: GatesConfig) -> list[GateResult]:
    """Each gate against the measured value; a metric that was never measured fails its gate."""
    results = [GateResult(name, "min", threshold, metrics.get(name)) for name, threshold in gates.min.items()]
    results += [GateResult(name, "max", threshold, metrics.get(name)) for name, threshold in gates.max.items()]
    return results


def bundle_digest(model_dir: Path, index_dir: Path | None, extra: dict[str, Path] | None = None,
                  settings: dict[str, Any] | None = None) -> str:
    """Identifies what a version ships: the model signature, its config (e.g. a threshold chosen at
    training time), the configs of any further networks, the predictor's settings, plus the index's
    id map and metadata."""
    digest = hashlib.sha256(read_json(model_dir / "config.json")["signature"].encode())
    digest.update((model_dir / "config.json").read_bytes())
    if settings:
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, folder in sorted((extra or {}).items()):
        digest.update(name.encode())
        digest.update((folder / "config.json").read_bytes())
    if index_dir is not None:
        for name in ("meta.json", "ids.npz"):
            if (index_dir / name).is_file():
                digest.update((index_dir / name).read_bytes())
    return digest.hexdigest()[:16]


def _client() -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def _versions(name: str) -> list[Any]:
    from mlflow.exceptions import MlflowException

    client = _client()
    with tracking_errors(f"cannot read the registry for {name}"):
        try:
            model = client.get_registered_model(name)
        except MlflowException as exc:
            if _not_found(exc):
                return []
            raise
    with tracking_errors(f"cannot list versions of {name}"):
        versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():  # search results do not carry aliases
        aliases.setdefault(str(version), []).append(alias)
    for version in versions:
        version.aliases = sorted(aliases.get(str(version.version), []))
    return versions


def _registered(name: str) -> bool:
    from mlflow.exceptions import MlflowException

    with tracking_errors(f"cannot read the registry for {name}"):
        try:
            _client().get_registered_model(name)
            return True
        except MlflowException as exc:
            if _not_found(exc):
                return False
            raise


def register_bundle(
    model_dir: Path, index_dir: Path | None, metrics: dict[str, float], cfg: RegistryConfig,
    settings: dict[str, Any], tags: dict[str, str], python_model: str, top: int,
    extra: dict[str, Path] | None = None, signature: str | None = None, known_answer_clip: Path | None = None,
) -> tuple[str, bool]:
    """Log a family's pyfunc bundle in the active run and register it (alias `candidate`); (version, is_new).

    `python_model` is the family's "models from code" file; `settings` travel with the bundle
    (settings.json) for its predictor; `top` is the default of the served `top` parameter. The same
    bundle (model + index) registered again gets no new version: its metric tags are refreshed and
    the candidate alias points at it. `known_answer_clip` travels with the bundle and the registered
    model's answer to it is recorded on the version (tracking/selfcheck.py: what a service checks).
    """
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    import musicid

    client = _client()
    extra = dict(extra or {})
    clash = set(extra) & {MODEL_ARTIFACT, INDEX_ARTIFACT, SETTINGS_ARTIFACT, SELFCHECK_ARTIFACT}
    if clash:
        raise ValueError(f"extra artifact names {sorted(clash)} are reserved")
    digest = bundle_digest(model_dir, index_dir if cfg.bundle_index else None, extra, settings)
    if known_answer_clip is not None:  # travels with the bundle; not part of what identifies it
        extra[SELFCHECK_ARTIFACT] = known_answer_clip.parent
    tags = tags | {TAG_SIGNATURE: signature or read_json(model_dir / "config.json")["signature"], TAG_BUNDLE: digest}
    metric_tags = {f"{METRIC_TAG}{k}": f"{v:g}" for k, v in metrics.items()}
    with tracking_errors("cannot register the model"):
        existing = [v for v in _versions(cfg.model_name) if v.tags.get(TAG_BUNDLE) == digest]
        if existing:
            version, is_new = existing[-1].version, False
            for key, value in metric_tags.items():
                client.set_model_version_tag(cfg.model_name, version, key, value)
        else:
            with tempfile.TemporaryDirectory() as scratch:
                settings_data, settings = settings, Path(scratch) / "settings.json"
                write_json(settings, settings_data | {"model_name": cfg.model_name})
                artifacts = {MODEL_ARTIFACT: str(model_dir), SETTINGS_ARTIFACT: str(settings),
                             **{name: str(folder) for name, folder in extra.items()}}
                if cfg.bundle_index and index_dir is not None:
                    artifacts[INDEX_ARTIFACT] = str(index_dir)
                with warnings.catch_warnings():  # "no input example": predicting needs indexed audio
                    warnings.simplefilter("ignore", UserWarning)
                    info = mlflow.pyfunc.log_model(
                        name=read_json(model_dir / "config.json").get("family", DEFAULT_FAMILY), python_model=python_model,
                        artifacts=artifacts,
                        code_paths=[str(Path(musicid.__file__).parent)],
                        signature=ModelSignature(
                            inputs=Schema([ColSpec("string", "audio")]),
                            params=ParamSchema([ParamSpec("top", "long", top)]),
                        ),
                        pip_requirements=_requirements(),
                    )
            registered = mlflow.register_model(
                info.model_uri, cfg.model_name, tags=tags | metric_tags
            )
            version, is_new = registered.version, True
        if known_answer_clip is not None and not client.get_model_version(cfg.model_name, version).tags.get(KNOWN_ANSWER_TAG):
            client.set_model_version_tag(cfg.model_name, version, KNOWN_ANSWER_TAG,
                                         encode_known_answer(_answer(f"models:/{cfg.model_name}/{version}", known_answer_clip)))
        client.set_registered_model_alias(cfg.model_name, cfg.candidate_alias, version)
    return str(version), is_new


def _answer(uri: str, clip: Path) -> dict[str, Any]:
    """The registered model's answer to `clip`, through pyfunc as a service loads it."""
    import mlflow
    import pandas as pd

    from musicid.tracking.pyfunc_io import encode_audio

    answer = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"audio": [encode_audio(clip)]}))[0]
    if "error" in answer:
        raise TrackingError(f"{uri} cannot answer its known-answer clip: {answer['error']}")
    return answer


def _requirements() -> list[str]:
    """Pinned runtime requirements of the bundled code (as installed here)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("torch", "torchaudio", "numpy", "faiss-cpu", "soundfile", "soxr", "pydantic", "pyyaml", "mlflow"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


@dataclass
class VersionInfo:
    name: str
    version: str
    aliases: list[str]
    signature: str
    created_ms: int
    metrics: dict[str, float]
    tags: dict[str, str]
    run_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "aliases": self.aliases, "signature": self.signature,
            "created_ms": self.created_ms, "metrics": self.metrics, "run_id": self.run_id,
            "data_version": self.tags.get("musicid.data_version", ""), "git_rev": self.tags.get("musicid.git_rev", ""),
            "dvc_exp": self.tags.get("musicid.dvc_exp", ""),
        }


def _info(version: Any) -> VersionInfo:
    metrics = {}
    for key, value in version.tags.items():
        if key.startswith(METRIC_TAG):
            try:
                metrics[key.removeprefix(METRIC_TAG)] = float(value)
            except ValueError:
                continue
    return VersionInfo(
        version.name, str(version.version), list(getattr(version, "aliases", []) or []),
        version.tags.get(TAG_SIGNATURE, ""), int(version.creation_timestamp or 0), metrics, dict(version.tags),
        version.run_id,
    )


def list_versions(name: str) -> list[VersionInfo]:
    """Every version of a registered model, oldest first, with aliases and key metrics."""
    configure(must_exist=True)
    with tracking_errors(f"cannot read the registry for {name}"):
        return [_info(v) for v in _versions(name)]


def get_version(name: str, version_or_alias: str) -> VersionInfo:
    """A version by number or by alias ("champion", "@candidate"); one-line error if there is none."""
    from mlflow.exceptions import MlflowException

    configure(must_exist=True)
    client = _client()
    ref = version_or_alias.removeprefix("@")
    with tracking_errors(f"cannot read the registry for {name}"):
        try:
            if ref.isdigit():
                return _info(client.get_model_version(name, ref))
            return _info(client.get_model_version_by_alias(name, ref))
        except MlflowException as exc:
            if not (_not_found(exc) or "alias" in str(exc).lower()):
                raise
            if not _registered(name):
                names = ", ".join(m.name for m in client.search_registered_models()) or "none yet"
                raise TrackingError(f"no registered model named {name} (registered: {names})") from None
            known = ", ".join(f"{v.version}" + (f" (@{', @'.join(v.aliases)})" if v.aliases else "") for v in
                              [_info(x) for x in _versions(name)]) or "none"
            what = f"version {ref}" if ref.isdigit() else f"alias @{ref}"
            raise TrackingError(f"registered model {name} has no {what}; versions: {known}") from None


def promote(name: str, version_or_alias: str, alias: str, gates: GatesConfig) -> tuple[VersionInfo, list[GateResult]]:
    """Point `alias` at a version if it passes every gate; otherwise refuse with the failing figures."""
    info = get_version(name, version_or_alias)
    results = check_gates(info.metrics, gates)
    failed = [r for r in results if not r.passed]
    if failed:
        raise TrackingError(
            f"{name} version {info.version} fails the release gates (params.yaml <family>.registry.gates): "
            + "; ".join(r.describe() for r in failed)
        )
    with tracking_errors(f"cannot set alias {alias}"):
        _client().set_registered_model_alias(name, alias, info.version)
    info.aliases = sorted(set(info.aliases) | {alias})
    return info, results


@dataclass
class FetchedModel:
    """A registry model downloaded to a local folder: the model folder and its bundled index."""

    uri: str
    version: VersionInfo
    model_dir: Path
    index_dir: Path | None
    _scratch: tempfile.TemporaryDirectory
    warning: str = ""  # set when the requested alias was missing and the fallback alias was used
    settings: dict[str, Any] = field(default_factory=dict)  # the bundle's settings.json (its predictor's config)
    extra: dict[str, Path] = field(default_factory=dict)  # further model folders by artifact name (register_bundle's extra)
    root: Path | None = None  # the downloaded pyfunc model (mlflow.pyfunc.load_model takes it)

    def cleanup(self) -> None:
        self._scratch.cleanup()


def fetch(uri: str, fallback_alias: str | None = None) -> FetchedModel:
    """Download `models:/NAME@ALIAS` or `models:/NAME/VERSION`.

    With fallback_alias, a missing alias falls back to that one with a warning (how the default
    champion falls back to the newest candidate).
    """
    import mlflow

    match = URI_PATTERN.match(uri)
    if not match:
        raise TrackingError(f"{uri}: not a registry URI; expected models:/NAME@ALIAS or models:/NAME/VERSION")
    name, warning = match["name"], ""
    try:
        info = get_version(name, match["alias"] or match["version"])
    except TrackingError:
        if not (match["alias"] and fallback_alias):
            raise
        info = get_version(name, fallback_alias)
        warning = (f"warning: {name} has no @{match['alias']} yet; using @{fallback_alias} (version {info.version}). "
                   f"Promote one with `musicid registry promote {info.version} --alias {match['alias']}`")
    scratch = tempfile.TemporaryDirectory(prefix="musicid-model-")
    with tracking_errors(f"cannot download {uri}"):
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{info.version}", dst_path=scratch.name))
    model_dir, index_dir = _artifact_dir(local, MODEL_ARTIFACT), _artifact_dir(local, INDEX_ARTIFACT)
    if not (model_dir / "config.json").is_file():
        scratch.cleanup()
        raise TrackingError(f"{uri} (version {info.version}): its artifacts hold no musicid model "
                            f"(artifact store moved or deleted, or not a musicid bundle)")
    settings_dir = _artifact_dir(local, SETTINGS_ARTIFACT)
    settings_file = settings_dir if settings_dir.is_file() else settings_dir / "settings.json"
    settings = read_json(settings_file) if settings_file.is_file() else {}
    extra = {name: _artifact_dir(local, name) for name in _artifact_names(local)
             if name not in (MODEL_ARTIFACT, INDEX_ARTIFACT, SETTINGS_ARTIFACT)}
    return FetchedModel(uri, info, model_dir, index_dir if index_dir.is_dir() else None, scratch, warning, settings, extra,
                        local)


def _pyfunc_artifacts(model_root: Path) -> dict[str, Any]:
    import yaml

    try:
        return yaml.safe_load((model_root / "MLmodel").read_text())["flavors"]["python_function"]["artifacts"] or {}
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return {}


def _artifact_names(model_root: Path) -> list[str]:
    return list(_pyfunc_artifacts(model_root))


def _artifact_dir(model_root: Path, name: str) -> Path:
    """Where pyfunc stored artifact `name` in a downloaded model (as its MLmodel file says)."""
    try:
        return model_root / _pyfunc_artifacts(model_root)[name]["path"]
    except (KeyError, TypeError):
        return model_root / "artifacts" / name
