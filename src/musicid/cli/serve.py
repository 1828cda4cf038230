"""`musicid serve`: every family's registered model behind one HTTP service (serving/app.py)."""

from __future__ import annotations

import os

import click

from musicid.cli.base import PARAMS_OPTION, _log_to_stderr, load_params_or_defaults, main


@main.command("serve")
@click.option("--host", default=None, help="Interface to listen on [default: serve.host, 127.0.0.1].")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port [default: serve.port, 8088].")
@click.option("--poll", "poll_s", type=click.FloatRange(min=0.1), default=None,
              help="Seconds between reads of the registry aliases [default: serve.poll_s].")
@PARAMS_OPTION
def serve(host: str | None, port: int | None, poll_s: float | None, params_path: str) -> None:
    """Serve every family over HTTP: POST /fingerprint/identify, /works/identify, /pitch/transcribe
    (multipart `file` or JSON {"audio": base64}), GET /models, GET /health, POST /models/FAMILY/reload,
    and a web page at /.

    Each family answers with what its registry alias points at (serve.alias, default champion), or
    $MUSICID_<FAMILY>_MODEL_URI (e.g. MUSICID_WORKS_MODEL_URI=models:/musicid-work-identifier/3). When the
    alias moves (`musicid registry promote`), the new version is loaded in the background, self-checked
    (a dummy forward, then the known answer recorded at registration) and swapped in; a version that
    fails is refused and the old one keeps serving (/models says why). Families the registry cannot
    give at start are retried every poll; /health names them.
    """
    import uvicorn

    from musicid.serving.app import Service, create_app
    from musicid.tracking.runs import configure

    _log_to_stderr()
    params = load_params_or_defaults(params_path)
    cfg = params.serve.model_copy(update={k: v for k, v in {"host": host, "port": port, "poll_s": poll_s}.items()
                                          if v is not None})
    params = params.model_copy(update={"serve": cfg})
    configure()
    service = Service(params, dict(os.environ))
    service.start()
    for family, slot in service.slots.items():
        state = (f"version {slot.current.version} ({slot.current.checks})" if slot.current else
                 f"not serving: {service.health()['not_serving'][family]}")
        click.echo(f"serve: {family:<12} {slot.target}: {state}", err=True)
    click.echo(f"serve: http://{cfg.host}:{cfg.port}/ (alias @{cfg.alias}, checked every {cfg.poll_s:g} s)", err=True)
    uvicorn.run(create_app(service), host=cfg.host, port=cfg.port, log_level="warning")
