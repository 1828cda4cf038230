"""Worker processes for decoding, safe in any parent, and ending with it.

Forked workers hang when the parent has already run OpenMP (faiss, torch), as the in-process
`smoke`/`bench` chains do; spawned ones are safe but re-import torch and librosa for every pool.
A forkserver with musicid preloaded is both: clean, and fast to start after the first pool.

Neither multiprocessing nor concurrent.futures ends a pool when its owner is killed (SIGKILL, the
OOM killer, a CI time limit): the forkserver, its workers and the resource tracker live on as
orphans. So every musicid pool's workers end with the process that owns the pool, however it
ends: on Linux the kernel kills them (PR_SET_PDEATHSIG) when their parent goes (the forkserver,
which itself dies with the owner, or the owner for spawned workers), and everywhere a watchdog
thread ends a worker once its owner's sentinel pipe closes. The resource tracker then sees its
pipe close and exits too.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Any

PRELOAD = ["musicid.forkserver_guard", "musicid.data.ingest", "musicid.store.build"]
OWNER_ENV = "MUSICID_POOL_OWNER"  # pid of the process that owns the pool (read by the forkserver guard)
_PR_SET_PDEATHSIG = 1


def kill_me_with_parent(expected_parent: int | None = None, sig: int = signal.SIGKILL) -> None:
    """Ask the kernel for `sig` when this process's parent ends (Linux; elsewhere a no-op).

    `expected_parent`: if the parent is already gone (it died before this ran), exit now.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)


def _end_with_owner(owner: int) -> None:
    """Pool worker initializer: die with the parent (kernel) and when the owner's sentinel closes (watchdog)."""
    kill_me_with_parent()
    parent = multiprocessing.parent_process()  # the owner, for spawn and forkserver workers alike
    if parent is None or parent.pid != owner:
        return

    def watch() -> None:
        parent.join()  # returns when the owner's end of the sentinel pipe closes: it ended, however
        os._exit(1)

    threading.Thread(target=watch, name="musicid-owner-watch", daemon=True).start()


def _quiet_cancelled_jobs(args: Any) -> None:
    """Python 3.11's pool manager thread, finding its workers terminated, sets an exception on every
    pending job, also on the ones OwnedPool has just cancelled, and dies printing InvalidStateError: a
    race inside concurrent.futures while a stage is being stopped, not an error of the stage."""
    from concurrent.futures import InvalidStateError
    from concurrent.futures.process import _ExecutorManagerThread

    if not (args.exc_type is InvalidStateError and isinstance(args.thread, _ExecutorManagerThread)):
        _default_excepthook(args)


_default_excepthook = threading.excepthook
threading.excepthook = _quiet_cancelled_jobs


class OwnedPool(ProcessPoolExecutor):
    """A pool that, left by an exception (a stopped stage: SIGTERM, Ctrl-C, an error), ends its workers
    and drops the queued jobs at once; ProcessPoolExecutor would run every queued job first."""

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            return bool(super().__exit__(exc_type, exc, tb))
        for process in list((self._processes or {}).values()):
            process.terminate()
        self.shutdown(wait=False, cancel_futures=True)
        return False


def worker_pool(workers: int, context: Any) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor on `context` whose workers end with this process."""
    os.environ[OWNER_ENV] = str(os.getpid())  # inherited by a forkserver started now
    return OwnedPool(max_workers=workers, mp_context=context, initializer=_end_with_owner, initargs=(os.getpid(),))


def process_pool(workers: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return worker_pool(workers, context)
