"""Killed stages leave nothing running and nothing half made that a later run trusts (issue 17)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from musicid.fsutil import atomic_dir, atomic_file, sweep_stale_staging

OWNER = """
import json, sys, time
from multiprocessing import get_context, resource_tracker
from multiprocessing import forkserver
from musicid.parallel import process_pool, worker_pool

def main():
    pool = process_pool(2) if sys.argv[1] == "forkserver" else worker_pool(2, get_context("spawn"))
    busy = [pool.submit(time.sleep, 120) for _ in range(4)]  # workers in the middle of a job
    while len(pool._processes) < 2 or not all(p.pid for p in pool._processes.values()):
        time.sleep(0.1)
    time.sleep(2)
    pids = [p.pid for p in pool._processes.values()] + [resource_tracker._resource_tracker._pid]
    if sys.argv[1] == "forkserver":
        pids.append(forkserver._forkserver._forkserver_pid)
    print(json.dumps(pids), flush=True)
    time.sleep(300)

if __name__ == "__main__":
    main()
"""


@contextlib.contextmanager
def musicid_log() -> io.StringIO:
    """What musicid logs meanwhile (its logger stops propagating once a CLI command has run, so caplog misses it)."""
    stream, logger = io.StringIO(), logging.getLogger("musicid")
    handler, level = logging.StreamHandler(stream), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("kind", ["forkserver", "spawn"])
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_pool_workers_forkserver_and_resource_tracker_end_with_a_killed_owner(tmp_path: Path, kind: str,
                                                                                how: signal.Signals) -> None:
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    owner = subprocess.Popen([sys.executable, str(script), kind], stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        pids = json.loads(owner.stdout.readline())
        assert len(pids) >= 3 and all(_alive(p) for p in pids)
        owner.send_signal(how)
        owner.wait(timeout=30)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in pids if _alive(p)], "processes outlived their killed owner"
    finally:
        owner.kill()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_stale_staging_of_dead_runs_is_swept_and_reported_live_ones_and_others_kept(tmp_path: Path) -> None:
    target = tmp_path / "train.zarr"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a pid that has ended
    stale = tmp_path / f".train.zarr.tmp-{dead_pid}-abc"
    (stale / "frames").mkdir(parents=True)
    (stale / "frames" / "c0").write_bytes(b"x" * 2_000_000)
    legacy = tmp_path / ".train.zarr.tmp-killed"  # staging named before owners were recorded
    legacy.mkdir()
    live = tmp_path / f".train.zarr.tmp-{os.getppid()}-def"  # a running process's staging: not ours to remove
    live.mkdir()
    other = tmp_path / ".val.zarr.tmp-1-x"  # another target's staging is never touched
    other.mkdir()
    with musicid_log() as logged:
        with atomic_dir(target) as staging:
            assert staging.name.startswith(f".train.zarr.tmp-{os.getpid()}-")
            (staging / "zarr.json").write_text("{}")
    assert not stale.exists() and not legacy.exists() and live.exists() and other.exists()
    assert (target / "zarr.json").is_file()
    assert f"removed {stale} (2.0 MB), staging left by an interrupted run" in logged.getvalue()
    assert sweep_stale_staging(target) == 0  # nothing stale left; the live one stays
    with atomic_file(tmp_path / "metrics.json") as tmp:
        assert tmp.name.startswith(f".metrics.json.tmp-{os.getpid()}-")
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".metrics")) == []


def test_a_stage_sweeps_dead_runs_staging_anywhere_in_the_workspace_first(tmp_path: Path, monkeypatch) -> None:
    """DVC can restore a killed stage's outputs from its run cache, so its own next write never comes:
    every stage sweeps data/, models/ and reports/ before it runs (a nested staging entry counts once)."""
    from click.testing import CliRunner

    from musicid.cli import main

    monkeypatch.chdir(tmp_path)
    stale = tmp_path / "data/shards/.fingerprint.tmp-killed"
    (stale / ".train.zarr.tmp-inner").mkdir(parents=True)
    (stale / "blob").write_bytes(b"x" * 1000)
    kept = tmp_path / "data/shards/fingerprint/train.zarr"
    kept.mkdir(parents=True)
    elsewhere = tmp_path / "scratch/.x.tmp-killed"  # outside the stage roots: not ours
    elsewhere.mkdir(parents=True)
    (tmp_path / "params.yaml").write_text("{}\n")
    with musicid_log() as logged:
        CliRunner().invoke(main, ["stage", "prepare"])  # fails later (no catalog); the sweep comes first
    assert "removed data/shards/.fingerprint.tmp-killed (0.0 MB)" in logged.getvalue()
    assert not stale.exists() and kept.is_dir() and elsewhere.is_dir()
