"""Fault injection for every pipeline stage: start it under `dvc repro`, stop it at a random point
(SIGKILL of the stage, SIGTERM of the stage, or Ctrl-C: SIGINT to dvc's whole process group), rerun
it, and check what a user relies on:

* every process of the stopped stage (workers, forkservers, resource trackers) ended within seconds;
* SIGINT / SIGTERM: the stage said so in one line ("<stage>: stopped by SIG…"), no traceback;
* the rerun (`dvc repro -f -s`: run the command, not a run-cache restore, so resuming is what runs)
  succeeds, no staging folder (`.<name>.tmp-*`) is left anywhere in the workspace, and every output
  outside reports/ hashes (dvc.lock) as the uninterrupted run's did. Reports carry wall-clock
  figures (seconds, latency, peak memory), so they are checked for presence, not by hash.

Used by tests/test_fault_matrix.py (every stage, in `make test`), tests/test_faults.py (its /proc
helpers) and benchmarks/faults.py (the full stages × signals × seeds table).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}
WALL_CLOCK = ("reports/",)  # outputs that hold timings: present, not hashed
STAGING_ROOTS = ("data", "models", "reports")


def stage_seconds(repro_output: str) -> dict[str, float]:
    """How long each stage took in a `dvc repro` log (`musicid stage` ends with "<stage>: finished in N s")."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+): finished in ([0-9.]+) s$", repro_output, re.M)}


def locked_outs(repo: Path, stage: str) -> dict[str, str]:
    """Each output of `stage` and its hash as dvc.lock records it."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"].get(stage, {})
    return {out["path"]: out.get("md5", "") for out in lock.get("outs", [])}


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:  # it ended meanwhile
        pass
    return found


def descendants(pid: int) -> set[int]:
    seen, todo = set(), [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; its parent has not reaped it yet


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return []


def _stage_process(dvc_pid: int, stage: str, timeout: float = 60.0) -> int | None:
    """The `musicid stage <stage>` process dvc started (None if dvc ended first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(dvc_pid):
        for pid in descendants(dvc_pid):
            args = cmdline(pid)
            if len(args) >= 3 and args[-3:-1] == ["stage", stage] or args[-2:] == ["stage", stage]:
                return pid
        time.sleep(0.05)
    return None


def staging_left(repo: Path) -> list[str]:
    return sorted(str(p.relative_to(repo)) for root in STAGING_ROOTS if (repo / root).is_dir()
                  for p in (repo / root).rglob(".*.tmp-*"))


@dataclass
class Outcome:
    stage: str
    signal: str
    seed: int
    kill_at_s: float  # after the stage process started
    killed: bool = False  # False: the stage had finished before the kill point (nothing to check but the rerun)
    one_line: bool | None = None  # SIGINT / SIGTERM: "<stage>: stopped by …", no traceback
    stop_s: float = 0.0  # from the signal until every process of the stage had ended
    survivors: list[int] = field(default_factory=list)
    rerun_ok: bool = False
    staging: list[str] = field(default_factory=list)
    compared: int = 0  # outputs compared by hash
    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # outputs (reports included) absent after the rerun
    detail: str = ""

    @property
    def ok(self) -> bool:
        return (self.rerun_ok and not self.survivors and not self.staging and not self.mismatched
                and not self.missing and self.one_line is not False)

    def row(self) -> dict:
        return asdict(self) | {"ok": self.ok}


def kill_point(stage: str, seed: int, seconds: float) -> float:
    """A seeded random point in the stage's run (its imports included): 10-90 % of an uninterrupted run."""
    return round(random.Random(f"{stage}:{seed}").uniform(0.1, 0.9) * seconds, 2)


def inject(repo: Path, env: dict[str, str], stage: str, how: str, seed: int, seconds: float) -> Outcome:
    """Stop `stage` at its seeded kill point with `how`, rerun it, and check the workspace."""
    reference = locked_outs(repo, stage)
    outcome = Outcome(stage, how, seed, kill_point(stage, seed, seconds))
    dvc = subprocess.Popen(["dvc", "repro", "-f", "-s", stage], cwd=repo, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    pid = _stage_process(dvc.pid, stage)
    tree: set[int] = set()
    if pid is not None:
        began = time.monotonic()
        while time.monotonic() - began < outcome.kill_at_s and alive(pid):
            tree |= descendants(pid)
            time.sleep(0.02)
        if alive(pid):
            tree |= {pid} | descendants(pid)
            stopped = time.monotonic()
            if how == "SIGINT":
                os.killpg(dvc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches dvc and the stage
            else:
                os.kill(pid, SIGNALS[how])
            outcome.killed = True
            while time.monotonic() - stopped < 30 and any(alive(p) for p in tree):
                time.sleep(0.05)
            outcome.stop_s = round(time.monotonic() - stopped, 2)
            outcome.survivors = sorted(p for p in tree if alive(p))
    try:
        output, _ = dvc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(dvc.pid, signal.SIGKILL)
        output, _ = dvc.communicate()
    for p in outcome.survivors:  # leave nothing behind for the next case, but report it
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    if outcome.killed and how != "SIGKILL":
        lines = [line for line in output.splitlines() if f"{stage}: stopped by" in line]
        outcome.one_line = len(lines) == 1 and "Traceback" not in output
        if not outcome.one_line:
            outcome.detail = output[-800:]
    rerun = subprocess.run(["dvc", "repro", "-f", "-s", stage], cwd=repo, env=env, capture_output=True, text=True,
                           timeout=600)
    outcome.rerun_ok = rerun.returncode == 0
    if not outcome.rerun_ok:
        outcome.detail = (rerun.stdout + rerun.stderr)[-800:]
    outcome.staging = staging_left(repo)
    after = locked_outs(repo, stage)
    outcome.missing = sorted(path for path in reference if not (repo / path).exists())
    hashed = [path for path in reference if not path.startswith(WALL_CLOCK)]
    outcome.compared = len(hashed)
    outcome.mismatched = sorted(path for path in hashed if after.get(path) != reference[path])
    return outcome


def format_table(outcomes: list[Outcome]) -> str:
    lines = ["| stage | signal | seed | kill at | stopped | one line | all ended in | rerun | staging left | outs same hash | result |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        same = f"{o.compared - len(o.mismatched)}/{o.compared}" if o.compared else "– (reports only)"
        lines.append(
            f"| {o.stage} | {o.signal} | {o.seed} | {o.kill_at_s:.1f} s | {'yes' if o.killed else 'had finished'} | "
            f"{'–' if o.one_line is None else 'yes' if o.one_line else 'NO'} | "
            f"{f'{o.stop_s:.1f} s' if o.killed else '–'}{' (' + str(len(o.survivors)) + ' left)' if o.survivors else ''} | "
            f"{'ok' if o.rerun_ok else 'FAILED'} | {len(o.staging) or 'none'} | {same} | {'pass' if o.ok else 'FAIL'} |")
    return "\n".join(lines)
