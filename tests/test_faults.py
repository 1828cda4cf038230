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


SLOW_SYNTH = "synth:\n  n_works: 400\n  versions_per_work: 3\n  min_duration_s: 20.0\n  max_duration_s: 30.0\n"


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):  # the process (or a thread) ended meanwhile
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _wait_for_workers(stage_pid: int, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [c for c in _children(stage_pid) if "multiprocessing" in _cmdline(c)]
        if len(workers) >= 2:
            time.sleep(2)  # the stage is in the middle of its work
            return _children(stage_pid)
        time.sleep(0.3)
    raise AssertionError("the stage never started its worker pool")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["SIGTERM", "parent SIGKILL"])
def test_a_stopped_stage_ends_at_once_with_one_line_and_leaves_no_staging_or_workers(tmp_path: Path, how: str) -> None:
    """`musicid stage synth` mid-render: SIGTERM (a CI time limit, `kill`) or its parent (`dvc repro`) SIGKILLed.
    The stage stops within seconds, says so in one line (SIGTERM), its pool's workers end and its staging is gone."""
    (tmp_path / "params.yaml").write_text(SLOW_SYNTH)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    musicid = str(Path(sys.executable).parent / "musicid")
    if how == "SIGTERM":
        stage = subprocess.Popen([musicid, "stage", "synth"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
        stage_pid, parent = stage.pid, None
    else:  # the stage's parent plays dvc: it starts the stage and waits for it
        parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen(sys.argv[1:]); "
                                   "print(p.pid, flush=True); p.wait()", musicid, "stage", "synth"],
                                  cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        stage_pid = int(parent.stdout.readline())
    pids = []
    try:
        pids = [stage_pid, *_wait_for_workers(stage_pid)]
        assert list((tmp_path / "data/raw").glob(".synthetic.tar.gz.tmp-*")), "the stage is writing its archive"
        began = time.monotonic()
        if parent is None:
            stage.send_signal(signal.SIGTERM)
            _, err = stage.communicate(timeout=30)
            assert stage.returncode == 143, err
            assert "synth: stopped by SIGTERM after" in err and "Traceback" not in err, err
        else:
            parent.kill()
            parent.wait()
        while any(_alive(p) for p in pids) and time.monotonic() - began < 20:
            time.sleep(0.2)
        assert not [p for p in pids if _alive(p)], "the stage or its workers outlived the stop"
        assert time.monotonic() - began < 20
        assert not list((tmp_path / "data/raw").glob(".*tmp-*")) and not (tmp_path / "data/raw/synthetic.tar.gz").exists()
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
