"""`musicid stage NAME`: the pipeline stages as dvc.yaml runs them."""

from __future__ import annotations

import time
from typing import Callable

import click

from musicid.cli.base import (
    PARAMS_OPTION, WORKERS_OPTION,
    _log_to_stderr, main,
)


def _stage_command(name: str, run: Callable[..., None]) -> click.Command:
    @PARAMS_OPTION
    @WORKERS_OPTION
    def command(params_path: str, workers: int | None) -> None:
        began = time.monotonic()  # the stage with its imports: what a long `dvc repro` log is read for
        from musicid.config import load_params
        from musicid.fsutil import sweep_stale_staging_under
        from musicid.layout import STAGING_ROOTS

        _log_to_stderr()
        sweep_stale_staging_under(*STAGING_ROOTS)
        run(load_params(params_path), workers=workers)
        click.echo(f"{name}: finished in {time.monotonic() - began:.1f} s")

    command.__doc__ = f"Run the `{name}` stage (what dvc.yaml calls; prefer `dvc repro {name}`)."
    return click.command(name)(command)


@main.group()
def stage() -> None:
    """Pipeline stages as dvc.yaml runs them. Use `dvc repro` to run only what is stale."""


def _register_stages() -> None:
    from musicid.stages import all_stages

    for name, run in all_stages().items():
        stage.add_command(_stage_command(name, run))


_register_stages()
