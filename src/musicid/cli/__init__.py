"""`musicid` command line: one entry point; one module per command group.

data (sources, manifests, synthetic music) · exp (tuning grids, summaries) · smoke / bench (workflows) · store · index / identify /
metrics (fingerprint) · works (work identifier) · pitch (per-window pitches) · registry (every family) · stage (dvc.yaml's stages).
"""

import atexit
import os
import signal
import sys
import threading


def _stop_while_starting() -> None:
    """`musicid stage NAME` stopped (SIGTERM, Ctrl-C) while Python still imports its libraries (its
    first second) has written nothing: it says so in one line and ends. The stage command puts its
    own handlers in place once it runs (cli/stage.py)."""
    if len(sys.argv) < 3 or sys.argv[1] != "stage":
        return
    started_by = sys.modules.get("multiprocessing.process")
    if started_by is not None and getattr(started_by.current_process(), "_inheriting", False):
        return  # a worker (spawn, forkserver) importing the stage's main module: not the stage itself
    name = sys.argv[2]

    def stop(signum: int, frame: object) -> None:
        os.write(2, f"{name}: stopped by {signal.Signals(signum).name} while starting; nothing was written "
                    "(rerun to go on)\n".encode())
        os._exit(143 if signum == signal.SIGTERM else 130)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)


_stop_while_starting()

from musicid.cli import data, exp, fingerprint, pitch, registry, serve, stage, store, team, workflows, works  # noqa: E402,F401  (register commands)
from musicid.cli.base import main  # noqa: E402

__all__ = ["main", "run"]


def run() -> None:
    """The `musicid` console command: `main`, then an exit without the interpreter's teardown.

    Finalising the modules of torch, MLflow, zarr and faiss takes 0.7–1.6 s after the work is done
    (measured: `python -c "import torch, mlflow, zarr, faiss"` 4.9 s, 3.7 s ending in `os._exit`),
    paid by every stage `dvc repro` runs and every short command. So once the command has returned,
    what a normal exit does that matters is done by hand (threads shut down and joined, atexit handlers
    run: MLflow's flush, multiprocessing's pool shutdown, weakref finalizers, logging; stdio flushed)
    and the process ends with the command's status. An exception that escapes exits the usual way.
    """
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # what a normal exit runs first: thread-pool exit hooks, then joins non-daemon threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`musicid ... | head`) or stream
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
