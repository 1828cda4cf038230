"""Imported by musicid's forkserver (musicid.parallel.PRELOAD) and nowhere else: the forkserver
dies when the process that started it does, so neither it nor its workers outlive a killed stage.

It also keeps a worker that is still being started when its stage stops from printing a traceback:
the stage releases the pool's semaphores as it unwinds, and a child forked a moment earlier then fails
to unpickle them (FileNotFoundError in SemLock._rebuild). The stage's own one line says what happened.
"""

import os
import sys

from musicid.parallel import OWNER_ENV, kill_me_with_parent

if os.environ.get(OWNER_ENV):
    kill_me_with_parent(int(os.environ[OWNER_ENV]))

_STARTING_UP = (FileNotFoundError, EOFError, ConnectionError)


def _quiet_when_the_pool_went_away(kind, value, tb):  # noqa: ANN001 - sys.excepthook's signature
    frames, frame = [], tb
    while frame is not None:
        frames.append((frame.tb_frame.f_code.co_filename, frame.tb_frame.f_code.co_name))
        frame = frame.tb_next
    in_bootstrap = any(name.endswith(os.path.join("multiprocessing", "spawn.py")) and code == "_main" for name, code in frames)
    if issubclass(kind, _STARTING_UP) and in_bootstrap:
        return  # the forkserver's child exits 1 without a word; the pool (if still there) sees a dead worker
    sys.__excepthook__(kind, value, tb)


sys.excepthook = _quiet_when_the_pool_went_away
