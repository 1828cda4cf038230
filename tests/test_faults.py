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
from typing import Iterator

import pytest

from fault_matrix import alive, children, cmdline
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
        assert len(pids) >= 3 and all(alive(p) for p in pids)
        owner.send_signal(how)
        owner.wait(timeout=30)
        deadline = time.monotonic() + 15
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in pids if alive(p)], "processes outlived their killed owner"
    finally:
        owner.kill()
        for pid in pids:
            if alive(pid):
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


def _wait_for_workers(stage_pid: int, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [c for c in children(stage_pid) if "multiprocessing" in " ".join(cmdline(c))]
        if len(workers) >= 2:
            time.sleep(2)  # the stage is in the middle of its work
            return children(stage_pid)
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
        while any(alive(p) for p in pids) and time.monotonic() - began < 20:
            time.sleep(0.2)
        assert not [p for p in pids if alive(p)], "the stage or its workers outlived the stop"
        assert time.monotonic() - began < 20
        assert not list((tmp_path / "data/raw").glob(".*tmp-*")) and not (tmp_path / "data/raw/synthetic.tar.gz").exists()
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


SMALL_SYNTH = "synth:\n  n_works: 6\n  versions_per_work: 2\n  min_duration_s: 8.0\n  max_duration_s: 10.0\n"


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (root only: the test is skipped where it cannot mount)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="mounts a tmpfs (root on Linux)")
def test_a_full_disk_fails_the_stage_in_one_line_keeps_nothing_and_the_rerun_succeeds(tmp_path: Path) -> None:
    """`musicid stage synth` in a workspace on a 256 kB tmpfs: the archive (~1 MB) cannot fit. One line
    names the file and what was free, no traceback, no half archive or staging; after the filesystem
    grows (space freed) the same command succeeds. A dvc.lock from an earlier run says how much is needed."""
    musicid = str(Path(sys.executable).parent / "musicid")
    with small_tmpfs(tmp_path / "ws", "256k") as ws:
        (ws / "params.yaml").write_text(SMALL_SYNTH)
        (ws / "dvc.lock").write_text("schema: '2.0'\nstages:\n  synth:\n    cmd: musicid stage synth\n    outs:\n"
                                     "    - path: data/raw/synthetic.tar.gz\n      md5: 0\n      size: 1234567\n")
        done = subprocess.run([musicid, "stage", "synth"], cwd=ws, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
        assert line.startswith("error: synth: disk full writing data/raw/synthetic.tar.gz:"), line
        assert "kB free" in line and "its outputs took 1.2 MB the last time (dvc.lock)" in line, line
        assert not list((ws / "data").rglob("*.tar.gz")) and not list((ws / "data").rglob(".*tmp-*"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(ws)], check=True)
        again = subprocess.run([musicid, "stage", "synth"], cwd=ws, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert (ws / "data/raw/synthetic.tar.gz").stat().st_size > 256_000


def test_a_second_index_build_or_stage_run_into_the_same_place_stops_in_one_line(tmp_path: Path) -> None:
    """While one run holds a folder (here: this test holds its lock), `musicid index build` into it and
    `musicid stage` of the same stage stop at once with one line naming the holder; a lock outlives no
    holder (released by the kernel however it ends), so the next run goes on."""
    from musicid.fsutil import BusyError, exclusive_writer
    from musicid.layout import STAGE_LOCKS

    musicid = str(Path(sys.executable).parent / "musicid")
    (tmp_path / "audio").mkdir()
    with exclusive_writer(tmp_path / "index"):
        done = subprocess.run([musicid, "index", "build", str(tmp_path / "audio"), "--out", str(tmp_path / "index")],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert f"error: another `musicid index build` is writing {tmp_path / 'index'} (pid {os.getpid()})" in done.stderr
        with pytest.raises(BusyError, match="another run is writing"):
            with exclusive_writer(tmp_path / "index"):  # the same process opens another handle: refused too
                pass
    with exclusive_writer(tmp_path / "index"):  # released: taken again
        pass
    with exclusive_writer(tmp_path / STAGE_LOCKS / "synth"):
        done = subprocess.run([musicid, "stage", "synth"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and f"error: stage synth is already running in this workspace (pid {os.getpid()})" in done.stderr
    assert not (tmp_path / "data/raw").exists()


@pytest.mark.slow
def test_two_dvc_repro_in_one_workspace_the_second_stops_on_dvcs_lock_and_the_first_finishes(tmp_path: Path) -> None:
    """A real DVC workspace running `musicid stage synth`: a second `dvc repro` meanwhile stops with DVC's
    lock error (one ERROR line naming the blocking run's pid; it never runs the stage beside the first),
    and the first finishes clean."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for name in ("DVC_ROOT", "DVC_EXP_NAME", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(name, None)
    (tmp_path / "params.yaml").write_text("synth:\n  n_works: 60\n  versions_per_work: 2\n  min_duration_s: 10.0\n"
                                          "  max_duration_s: 12.0\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  synth:\n    cmd: musicid stage synth\n    params: [synth]\n"
                                       "    outs: [data/raw/synthetic.tar.gz]\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, env=env)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True, env=env)
    first = subprocess.Popen(["dvc", "repro"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / "data/raw").glob(".synthetic.tar.gz.tmp-*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, "the first run should still be writing its archive"
        second = subprocess.run(["dvc", "repro"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the second run must not have disturbed the first"
        errors = [line for line in (second.stdout + second.stderr).splitlines() if line.startswith("ERROR")]
        # DVC's read/write lock on the outputs: one ERROR line, then the blocking run's pid and command
        assert second.returncode != 0 and len(errors) == 1 and "is busy, it is being blocked by" in errors[0], second.stderr
        assert f"(PID {first.pid}): " in second.stderr, second.stderr
        assert "Running stage" not in second.stdout + second.stderr
        out, _ = first.communicate(timeout=300)
        assert first.returncode == 0, out
    finally:
        if first.poll() is None:
            first.kill()
    status = subprocess.run(["dvc", "status"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout


def _flip(path: Path, at: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.chmod(0o644)  # cache objects are read-only
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_a_bit_flipped_cache_or_remote_object_is_named_and_never_checked_out(tmp_path: Path) -> None:
    """DVC copies a corrupt cache object into the workspace without a word; `musicid data verify-cache`
    re-hashes what dvc.lock and the .dvc files need and names it (exit 1), `--remove` drops it so
    `dvc pull` brings a good copy; a corrupt remote object is named by `--remote`, and with the
    remote's `verify = true` (this project's default) `dvc pull` refuses it."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert (done.returncode == 0) == ok, f"{args}: {done.stdout}{done.stderr}"
        return done

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    (repo / "store").mkdir()
    for i in range(3):
        (repo / "store" / f"part-{i}.bin").write_bytes(os.urandom(20_000))
    run("dvc", "add", "-q", "store")
    run("dvc", "remote", "add", "-q", "-d", "r", str(remote))
    run("dvc", "remote", "modify", "r", "verify", "true")
    run("dvc", "push", "-q")
    musicid = str(Path(sys.executable).parent / "musicid")
    assert "0 corrupt, 0 missing" in run(musicid, "data", "verify-cache").stdout

    objects = sorted(p for p in (repo / ".dvc/cache/files/md5").rglob("*") if p.is_file() and not p.name.endswith(".dir"))
    _flip(objects[0])
    bad = run(musicid, "data", "verify-cache", ok=False)
    assert f"corrupt: {objects[0]} (store, store.dvc): md5 " in bad.stderr and "1 corrupt" in bad.stdout, bad.stderr
    removed = run(musicid, "data", "verify-cache", "--remove", ok=False)
    assert "; removed" in removed.stderr and not objects[0].exists()
    run("dvc", "pull", "-q")  # the good copy comes back from the remote
    assert "0 corrupt, 0 missing" in run(musicid, "data", "verify-cache").stdout

    remote_objects = sorted(p for p in remote.rglob("*") if p.is_file() and not p.name.endswith(".dir"))
    _flip(remote_objects[1])
    named = run(musicid, "data", "verify-cache", "--remote", ok=False)
    assert f"corrupt: {remote_objects[1]} (store, store.dvc)" in named.stderr, named.stderr
    for path in (repo / ".dvc/cache").rglob("*"):
        if path.is_file():
            path.chmod(0o644)
    subprocess.run(["rm", "-rf", str(repo / ".dvc/cache"), str(repo / "store")], check=True)
    pulled = run("dvc", "pull", ok=False)
    assert "store" in pulled.stderr and "ERROR" in pulled.stderr  # verify = true: the download was hashed and refused
