"""`musicid stage NAME`: the pipeline stages as dvc.yaml runs them.

A stage stops cleanly on Ctrl-C (SIGINT) and SIGTERM, and when whoever started it (`dvc repro`)
dies, even by SIGKILL: it gets SIGTERM from the kernel then (PR_SET_PDEATHSIG) instead of running
on as an orphan. Stopping unwinds the stage: its staging folders and unfinished MLflow run are
discarded or marked failed, its worker pools end, and it prints one line and exits 130 / 143.
A full disk ends it the same way, with one line: what it was writing, what is free, and how much
its outputs took the last time (dvc.lock), i.e. about what the rerun needs.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import nullcontext
from typing import Any, Callable

import click

from musicid.cli.base import (
    PARAMS_OPTION, WORKERS_OPTION,
    _log_to_stderr, main,
)


class StageStopped(BaseException):
    """SIGTERM arrived: unwind like KeyboardInterrupt (not an Exception, so no handler swallows it)."""


def _raise_stopped(signum: int, frame: Any) -> None:
    raise StageStopped(signal.Signals(signum).name)


def _stop_with_parent() -> None:
    """SIGTERM raises StageStopped, SIGINT KeyboardInterrupt (in place of the one-line exits of the
    start, cli/__init__.py); the kernel sends SIGTERM when the parent (dvc) dies."""
    from musicid.parallel import kill_me_with_parent

    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    kill_me_with_parent(os.getppid(), sig=signal.SIGTERM)


def _stage_command(name: str, run: Callable[..., None]) -> click.Command:
    @PARAMS_OPTION
    @WORKERS_OPTION
    def command(params_path: str, workers: int | None) -> None:
        began = time.monotonic()  # the stage with its imports: what a long `dvc repro` log is read for
        from musicid.config import load_params
        from musicid.errors import MusicidError
        from musicid.fsutil import DiskFullError, exclusive_writer, is_disk_full, publish_nothing, sweep_stale_staging_under
        from musicid.layout import STAGE_LOCKS, STAGING_ROOTS

        try:
            _stop_with_parent()
            _log_to_stderr()
            world = _training_world(name, params_path)
            elsewhere = _reported_elsewhere()  # and locked there
            if world is not None and not world.main:  # worker ranks train in step with rank 0, which writes and prints
                publish_nothing()
                sys.stdout = open(os.devnull, "w")
                os.environ["TQDM_DISABLE"] = "1"
            with nullcontext() if elsewhere else exclusive_writer(
                    STAGE_LOCKS / name, f"stage {name} is already running in this workspace"):
                if not elsewhere:
                    sweep_stale_staging_under(*STAGING_ROOTS)
                params = load_params(params_path)
                if world is None and _launches(name, params):  # train.world_size > 1: ranks rerun this command
                    from musicid.training.distributed import launch

                    _check_batches(name, params, params.train.world_size)
                    launch(params.train.world_size, ["stage", name, "--params", params_path], name)
                elif world is None:
                    run(params, workers=workers)
                else:
                    from musicid.training.distributed import end_world

                    try:
                        run(params, workers=workers)
                    finally:
                        end_world()
            if elsewhere:
                return
        except (DiskFullError, OSError) as exc:
            if not isinstance(exc, DiskFullError) and not is_disk_full(exc):
                raise
            raise MusicidError(_disk_full_line(name, exc)) from None
        except (StageStopped, KeyboardInterrupt) as stopped:
            how = str(stopped) if isinstance(stopped, StageStopped) else "SIGINT"
            if _reported_elsewhere():
                sys.exit(143 if how == "SIGTERM" else 130)
            click.echo(f"{name}: stopped by {how} after {time.monotonic() - began:.1f} s; nothing it had not "
                       "finished was kept (rerun to go on)", err=True)
            sys.exit(143 if how == "SIGTERM" else 130)
        click.echo(f"{name}: finished in {time.monotonic() - began:.1f} s")

    command.__doc__ = f"Run the `{name}` stage (what dvc.yaml calls; prefer `dvc repro {name}`)."
    return click.command(name)(command)


def _reported_elsewhere() -> bool:
    """Ranks that `launch` started (the launcher holds the lock and reports the stage) and the worker
    ranks of a user's torchrun (rank 0 does)."""
    if "WORLD_SIZE" not in os.environ:
        return False
    from musicid.training.distributed import LAUNCHED_ENV

    return os.environ.get("RANK", "0") != "0" or LAUNCHED_ENV in os.environ


def _is_training(name: str) -> bool:
    """Stages that run a family's training loop: the ones that can run as several DDP processes."""
    return name.endswith(("-train", "-train-prod"))


def _launches(name: str, params: Any) -> bool:
    """train.world_size > 1 and not already inside torchrun: this command starts the ranks itself."""
    return _is_training(name) and params.train.world_size > 1 and "WORLD_SIZE" not in os.environ


def _check_batches(name: str, params: Any, world_size: int) -> None:
    """Before any process starts: every loop the stage runs must split its batch evenly (one line naming the keys)."""
    from functools import reduce

    from musicid.families import FAMILIES
    from musicid.training.distributed import World

    for trainer in (t for family in FAMILIES.values() for t in family.trainers):
        if name in (trainer.stage, trainer.prod_stage):
            section = reduce(getattr, trainer.section.split("."), params)
            World(size=world_size).check_divides(*section.ddp_batch(trainer.section))


def _training_world(name: str, params_path: str) -> Any:
    """This process's DDP world when a training stage runs under torchrun (`launch`'s or the user's), else None."""
    from musicid.config import load_params
    from musicid.training.distributed import check_world_size, current_world

    if "WORLD_SIZE" not in os.environ:
        return None
    if not _is_training(name):
        from musicid.errors import ConfigError

        raise ConfigError(f"stage {name} does not train: run it without torchrun")
    params = load_params(params_path)
    check_world_size(params.train.world_size)
    world = current_world()
    _check_batches(name, params, world.size)
    return world


def _disk_full_line(stage_name: str, exc: Exception) -> str:
    """`<stage>: disk full writing <path>: …; its outputs took N last time (dvc.lock): free that and rerun`."""
    import shutil
    from pathlib import Path

    import yaml

    from musicid.fsutil import DiskFullError, human_bytes, mount_point

    if isinstance(exc, DiskFullError):
        what = str(exc)
    else:  # outside an atomic write (a checkpoint, a log): the file the system named
        path = getattr(exc, "filename", None) or "."
        what = f"disk full writing {path} ({human_bytes(shutil.disk_usage(mount_point(path)).free)} free)"
    try:
        outs = yaml.safe_load(Path("dvc.lock").read_text())["stages"][stage_name]["outs"]
        needed = sum(int(out.get("size") or 0) for out in outs)
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        needed = 0
    hint = (f"its outputs took {human_bytes(needed)} the last time (dvc.lock): free at least that much and rerun"
            if needed else "free space and rerun")
    return f"{stage_name}: {what}; {hint}"


@main.group()
def stage() -> None:
    """Pipeline stages as dvc.yaml runs them. Use `dvc repro` to run only what is stale."""


def _register_stages() -> None:
    from musicid.stages import all_stages

    for name, run in all_stages().items():
        stage.add_command(_stage_command(name, run))


_register_stages()
