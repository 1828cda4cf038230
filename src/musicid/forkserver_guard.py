"""Imported by musicid's forkserver (musicid.parallel.PRELOAD) and nowhere else: the forkserver
dies when the process that started it does, so neither it nor its workers outlive a killed stage."""

import os

from musicid.parallel import OWNER_ENV, kill_me_with_parent

if os.environ.get(OWNER_ENV):
    kill_me_with_parent(int(os.environ[OWNER_ENV]))
