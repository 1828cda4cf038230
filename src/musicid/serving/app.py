"""`musicid serve`: one FastAPI app answering every family with its registered model, hot-switched.

    POST /fingerprint/identify   POST /works/identify   POST /pitch/transcribe
        multipart upload (field `file`) or JSON {"audio": "<base64>"}; optional `top`.
        → the JSON the CLI prints for one clip, plus {"model": {"version", "signature", ...}}
    GET  /models                      family → version, alias, signature, loaded since, refused versions
    GET  /health                      what serves and what does not (and why)
    POST /models/{family}/reload      read the alias now; load, self-check and swap if it moved (or ?force=true)
    GET  /                            the web page (upload or record, pick the family, see the answer)

A thread reads every alias each `serve.poll_s`; see slots.py for the swap.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import tempfile
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from musicid.config import Params
from musicid.serving.slots import ModelSlot, NotServing, Route

log = logging.getLogger(__name__)


def routes(params: Params) -> list[Route]:
    """The families the service answers and the registered model behind each."""
    return [Route("fingerprint", "identify", params.fingerprint.registry),
            Route("works", "identify", params.works.registry),
            Route("pitch", "transcribe", params.pitch_transcribe.registry)]


class Service:
    """The slots and the thread that keeps them on their aliases."""

    def __init__(self, params: Params, environ: dict[str, str]) -> None:
        self.cfg = params.serve
        self.slots = {r.family: ModelSlot(r, self.cfg.alias, environ.get(r.env) or None) for r in routes(params)}
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        for slot in self.slots.values():  # what can be loaded now serves from the start; the rest is retried
            slot.refresh()
        self._watcher = threading.Thread(target=self._watch, name="musicid-serve-watch", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.cfg.poll_s):
            for slot in self.slots.values():
                try:
                    slot.refresh()
                except Exception as exc:  # noqa: BLE001 - the watcher must outlive any one failure
                    slot.error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        self._stop.set()
        for slot in self.slots.values():
            slot.close()

    def health(self) -> dict[str, Any]:
        serving = {f: s.current.version for f, s in self.slots.items() if s.current}
        missing = {f: s.error or ("refused: " + "; ".join(f"v{v}: {r}" for v, r in s.refused.items()) if s.refused
                                  else "not loaded yet")
                   for f, s in self.slots.items() if not s.current}
        return {"status": "ok" if not missing else ("degraded" if serving else "down"), "serving": serving,
                "not_serving": missing}


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="musicid", description="Every musicid family's registered model over HTTP, hot-switched.")
    limit = int(service.cfg.max_upload_mb * 2**20)

    def slot_of(family: str, action: str | None = None) -> ModelSlot:
        slot = service.slots.get(family)
        if slot is None or (action is not None and action != slot.route.action):
            known = ", ".join(f"/{s.route.family}/{s.route.action}" for s in service.slots.values())
            raise HTTPException(404, f"no family endpoint /{family}{'/' + action if action else ''}; known: {known}")
        return slot

    async def audio_of(request: Request) -> tuple[bytes, str, int | None]:
        """The clip's bytes, its name and `top`, from a multipart upload or JSON."""
        declared = int(request.headers.get("content-length") or 0)
        if declared > limit:
            raise HTTPException(413, f"upload of {declared / 2**20:.1f} MB is over serve.max_upload_mb "
                                     f"({service.cfg.max_upload_mb:g} MB)")
        kind = request.headers.get("content-type", "")
        top = request.query_params.get("top")
        if kind.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise HTTPException(400, "multipart upload needs a file field named `file`")
            data, name = await upload.read(), Path(upload.filename or "upload").name
            top = form.get("top") or top
        elif kind.startswith("application/json"):
            try:
                body = await request.json()
                data, name = base64.b64decode(body["audio"], validate=True), str(body.get("name") or "upload")
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise HTTPException(400, 'JSON body must be {"audio": "<base64 of an audio file>"}') from None
            top = body.get("top") or top
        else:
            raise HTTPException(400, "send the clip as a multipart upload (field `file`) or JSON {\"audio\": base64}")
        if len(data) > limit:
            raise HTTPException(413, f"upload of {len(data) / 2**20:.1f} MB is over serve.max_upload_mb "
                                     f"({service.cfg.max_upload_mb:g} MB)")
        if not data:
            raise HTTPException(400, "empty upload")
        try:
            top_n = int(top) if top not in (None, "") else None
        except ValueError:
            raise HTTPException(400, f"top must be a whole number, got {top!r}") from None
        return data, name, top_n

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return resources.files("musicid.serving").joinpath("page.html").read_text()

    @app.get("/health")
    def health() -> JSONResponse:
        report = service.health()
        return JSONResponse(report, status_code=200 if report["serving"] else 503)

    @app.get("/models")
    def models() -> dict[str, Any]:
        return {family: slot.describe() for family, slot in service.slots.items()}

    @app.post("/models/{family}/reload")
    def reload(family: str, force: bool = False) -> dict[str, Any]:
        slot = slot_of(family)
        swapped = slot.refresh(force=force)
        return slot.describe() | {"swapped": swapped}

    @app.post("/{family}/{action}")
    async def answer(family: str, action: str, request: Request) -> dict[str, Any]:
        slot = slot_of(family, action)
        data, name, top = await audio_of(request)
        with tempfile.TemporaryDirectory(prefix="musicid-serve-") as scratch:
            clip = Path(scratch) / ("clip" + Path(name).suffix[:12])
            clip.write_bytes(data)
            try:
                result, served = await run_in_threadpool(slot.predict, str(clip), top)
            except NotServing as exc:
                raise HTTPException(503, str(exc)) from None
        result = json.loads(json.dumps(result, default=str).replace(str(clip), name))  # messages name the upload
        if "error" in result:  # the model could not read the clip: the client's input, not the service
            raise HTTPException(400, f"not audio we can decode: {result['error']}")
        result.pop("query", None)
        return result | {"model": {"family": family, "registered_model": slot.route.registry.model_name,
                                   "version": served.version, "signature": served.signature}}

    @app.on_event("shutdown")
    def shutdown() -> None:
        service.stop()

    return app
