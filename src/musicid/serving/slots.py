"""One served model per family: what its registry alias points at, loaded, self-checked and swapped in.

A slot follows its alias (default `champion`) or a fixed `MUSICID_<FAMILY>_MODEL_URI`. When the alias
moves, the new version is downloaded and loaded beside the old one, self-checked (a dummy forward on
noise, then the known answer recorded at registration: tracking/selfcheck.py) and only then swapped in
with one assignment; a request holds the model it started with, so requests in flight finish on the old
one. A version that fails is refused with its reason (shown by /models) and the old one keeps serving.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicid.config import RegistryConfig
from musicid.errors import MusicidError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """A family as the service exposes it: `POST /<family>/<action>` answered by one registered model."""

    family: str
    action: str
    registry: RegistryConfig

    @property
    def env(self) -> str:
        return f"MUSICID_{self.family.upper()}_MODEL_URI"


@dataclass
class Served:
    model: Any  # mlflow pyfunc model
    version: str
    signature: str
    uri: str
    loaded_since: float
    checks: str
    fetched: Any  # tracking.registry.FetchedModel: its download folder lives as long as the model
    lock: threading.Lock = field(default_factory=threading.Lock)

    def predict(self, audio: str, top: int | None) -> dict[str, Any]:
        """`audio`: a file path or base64 of an audio file (what every family's pyfunc takes)."""
        import pandas as pd

        with self.lock:  # one request at a time per loaded model (torch + FAISS state); other models are free
            return self.model.predict(pd.DataFrame({"audio": [audio]}), params={"top": top} if top else None)[0]


class NotServing(MusicidError):
    """The family has no model that passed its self-check (yet)."""


def _one_line(exc: BaseException) -> str:
    """`Type: first line of the message`: how a refused version's reason reads in /models."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def self_check(model: Any, fetched: Any) -> tuple[str | None, str]:
    """(why the model must not serve, or None; what was checked)."""
    import pandas as pd

    from musicid.tracking.pyfunc_io import encode_audio
    from musicid.tracking.selfcheck import CLIP, KNOWN_ANSWER_TAG, SELFCHECK_ARTIFACT, differs, noise_wav

    try:
        # 30 s: longer than any family's shortest input (the work identifier's chunk is 12 s at the demo's params)
        answers = model.predict(pd.DataFrame({"audio": [base64.b64encode(noise_wav(30.0)).decode()]}))
    except Exception as exc:  # noqa: BLE001 - any failure refuses the version, with its reason
        return f"dummy forward failed: {_one_line(exc)}", ""
    if not (isinstance(answers, list) and len(answers) == 1 and isinstance(answers[0], dict)):
        return f"dummy forward gave {type(answers).__name__}, not one answer per clip", ""
    if "error" in answers[0]:
        return f"dummy forward: {answers[0]['error']}", ""
    expected = fetched.version.tags.get(KNOWN_ANSWER_TAG)
    clip = fetched.extra.get(SELFCHECK_ARTIFACT)
    if not expected or clip is None or not (Path(clip) / CLIP).is_file():
        return None, "dummy forward (this version's bundle has no known-answer clip: registered before it existed)"
    try:
        answer = model.predict(pd.DataFrame({"audio": [encode_audio(Path(clip) / CLIP)]}))[0]
    except Exception as exc:  # noqa: BLE001
        return f"known-answer query failed: {_one_line(exc)}", ""
    reason = differs(expected, answer)
    return reason, "dummy forward + known answer"


class ModelSlot:
    """The model one family serves now, and how it got there."""

    def __init__(self, route: Route, alias: str, uri: str | None = None) -> None:
        self.route, self.alias, self.fixed_uri = route, alias, uri
        self.current: Served | None = None
        self.refused: dict[str, str] = {}  # version → why it was not swapped in
        self.error = ""  # the last failure to read the registry or load
        self._refreshing = threading.Lock()
        self._retired: list[Served] = []

    @property
    def target(self) -> str:
        return self.fixed_uri or f"models:/{self.route.registry.model_name}@{self.alias}"

    def _wanted(self) -> tuple[str, str]:
        """(model name, version) the slot should serve now."""
        from musicid.tracking.registry import URI_PATTERN, get_version

        match = URI_PATTERN.match(self.target)
        if not match:
            raise MusicidError(f"{self.route.env}={self.target}: not a registry URI (models:/NAME@ALIAS or models:/NAME/VERSION)")
        return match["name"], get_version(match["name"], match["alias"] or match["version"]).version

    def refresh(self, force: bool = False) -> bool:
        """Load the version the alias points at if it is new (or `force`); True when a new model was swapped in."""
        with self._refreshing:
            try:
                name, version = self._wanted()
            except MusicidError as exc:
                self.error = str(exc)
                return False
            if not force and ((self.current and self.current.version == version) or version in self.refused):
                self.error = ""
                return False
            return self._load(name, version)

    def _load(self, name: str, version: str) -> bool:
        import mlflow

        from musicid.tracking.registry import fetch

        began = time.perf_counter()
        try:
            fetched = fetch(f"models:/{name}/{version}")
        except MusicidError as exc:
            self.error = str(exc)
            return False
        try:
            model = mlflow.pyfunc.load_model(str(fetched.root))  # the family's loader self-checks the weights
        except Exception as exc:  # noqa: BLE001 - a version that cannot load is refused, not fatal
            reason, checks = f"does not load: {_one_line(exc)}", ""
        else:
            reason, checks = self_check(model, fetched)
        if reason:
            fetched.cleanup()
            self.refused[version] = reason
            self.error = ""
            log.warning(f"serve: {self.route.family}: {name} version {version} refused: {reason}")
            return False
        old, self.current = self.current, Served(model, version, fetched.version.signature, fetched.uri, time.time(),
                                                 checks, fetched)
        self.refused.pop(version, None)
        self.error = ""
        if old is not None:
            self._retired.append(old)  # its files go at shutdown: a request in flight may still read them
        log.warning(f"serve: {self.route.family}: {name} version {version} serving "
                    f"({checks}; {time.perf_counter() - began:.1f} s)")
        return True

    def predict(self, audio: str, top: int | None = None) -> tuple[dict[str, Any], Served]:
        served = self.current  # read once: this request finishes on this model whatever is swapped in meanwhile
        if served is None:
            raise NotServing(f"{self.route.family}: no model serving ({self.error or 'none passed its self-check'})")
        return served.predict(audio, top), served

    def describe(self) -> dict[str, Any]:
        served = self.current
        return {
            "family": self.route.family, "endpoint": f"/{self.route.family}/{self.route.action}",
            "registered_model": self.route.registry.model_name, "follows": self.target,
            "alias": None if self.fixed_uri else self.alias,
            "version": served.version if served else None, "signature": served.signature if served else None,
            "loaded_since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(served.loaded_since)) if served else None,
            "self_check": served.checks if served else None,
            "refused": dict(self.refused), "error": self.error or None,
        }

    def close(self) -> None:
        for served in [*self._retired, *([self.current] if self.current else [])]:
            served.fetched.cleanup()
