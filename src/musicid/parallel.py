"""Worker processes for decoding, safe in any parent.

Forked workers hang when the parent has already run OpenMP (faiss, torch), as the in-process
`smoke`/`bench` chains do; spawned ones are safe but re-import torch and librosa for every pool.
A forkserver with musicid preloaded is both: clean, and fast to start after the first pool.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

PRELOAD = ["musicid.data.ingest", "musicid.store.build"]


def process_pool(workers: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)
