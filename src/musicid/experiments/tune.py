"""`musicid exp tune`: one queued DVC experiment per grid point × seed, run, then tagged in MLflow.

Each experiment is `dvc exp run --queue --name <grid>-p<i>-s<seed> -S key=value ...`, so it is an
ordinary DVC experiment (`dvc exp show`, `dvc exp apply`) and every stage it runs logs to the
repository's MLflow DB with the experiment's name (tag `musicid.dvc_exp`). Once the queue is done
the runs of each experiment get the grid's tags, which `musicid exp summary` groups by:
`musicid.tune` (grid name), `musicid.tune.point` (the point's `key=value` list), `musicid.tune.seed`.
The plan and each experiment's outcome are kept in reports/tune/<grid>/grid.json.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from musicid.errors import MusicidError
from musicid.experiments.grid import Grid, format_value, point_label
from musicid.fsutil import read_json, write_json
from musicid.layout import TUNE_REPORTS

TAG_TUNE, TAG_POINT, TAG_SEED = "musicid.tune", "musicid.tune.point", "musicid.tune.seed"
FINISHED = ("Success", "Failed")


class TuneError(MusicidError):
    """The sweep cannot be queued or run."""


@dataclass
class Planned:
    name: str  # the DVC experiment name
    point: str  # point_label
    seed: int
    values: dict = field(default_factory=dict)  # the point: params key → value
    status: str = "Planned"
    runs_tagged: int = 0


def plan(grid: Grid, seeds: list[int]) -> list[Planned]:
    return [Planned(f"{grid.name}-p{i}-s{seed}", point_label(point), seed, point)
            for i, point in enumerate(grid.points()) for seed in seeds]


def record_path(name: str) -> Path:
    return TUNE_REPORTS / name / "grid.json"


def _dvc(*args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["dvc", *args], capture_output=True, text=True,
                          env={**os.environ, **{k: v for k, v in (env or {}).items() if k not in os.environ}})
    if check and done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise TuneError(f"dvc {' '.join(args[:3])} failed: {message[-1] if message else done.returncode}")
    return done.stdout


def queue_tasks(check: bool = True) -> dict[str, str]:
    """Every task `dvc queue status` lists: name → status (Queued, Running, Success, Failed)."""
    rows = (line.split() for line in _dvc("queue", "status", check=check).splitlines()[1:])
    return {parts[1]: parts[-1] for parts in rows if len(parts) >= 3}


def existing_experiments() -> set[str]:
    """Names DVC already knows (experiments and queued tasks): a new sweep must not reuse them."""
    return set(_dvc("exp", "list", "--name-only", check=False).split()) | set(queue_tasks(check=False))


def queue(grid: Grid, planned: list[Planned], stages: tuple[str, ...] = ()) -> None:
    """`dvc exp run --queue` each planned experiment; `stages` limits each to those stages and what they
    need (default: the whole pipeline, as `dvc exp run` without targets)."""
    taken = existing_experiments() & {p.name for p in planned}
    if taken:
        raise TuneError(f"experiment names already in use: {', '.join(sorted(taken))}; "
                        "rename the grid (`name:` or --name) or `dvc exp remove` them")
    for item in planned:
        sets = [arg for key, value in item.values.items() for arg in ("-S", f"{key}={format_value(value)}")]
        sets += [arg for key in grid.seed_keys for arg in ("-S", f"{key}={item.seed}")]
        _dvc("exp", "run", "--queue", "--name", item.name, *sets, *stages)
        item.status = "Queued"


def queue_status(names: set[str]) -> dict[str, str]:
    """Status of each named task in `dvc queue status`."""
    return {name: status for name, status in queue_tasks().items() if name in names}


def run_queue(planned: list[Planned], jobs: int, poll_s: float = 3.0,
              on_change: Callable[[list[Planned]], None] | None = None) -> None:
    """Start `jobs` queue workers and wait until every planned experiment has finished (tqdm)."""
    from tqdm import tqdm

    threads = str(max(1, (os.cpu_count() or 1) // jobs))  # N workers share the cores instead of each taking all
    _dvc("queue", "start", "-j", str(jobs), env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    names = {p.name for p in planned}
    with tqdm(total=len(planned), desc="exp tune", unit="exp") as bar:
        while True:
            status = queue_status(names)
            changed = False
            for item in planned:
                new = status.get(item.name, item.status)
                changed |= new != item.status
                item.status = new
            done = sum(p.status in FINISHED for p in planned)
            bar.n = done
            bar.set_postfix(running=sum(p.status == "Running" for p in planned),
                            failed=sum(p.status == "Failed" for p in planned))
            bar.refresh()
            if changed and on_change is not None:
                on_change(planned)
            if done == len(planned):
                return
            time.sleep(poll_s)


def tag_runs(grid_name: str, planned: list[Planned]) -> int:
    """Tag every MLflow run each finished experiment wrote with the grid point and seed."""
    import mlflow

    from musicid.tracking.runs import TAG_DVC_EXP, configure, tracking_errors

    configure(must_exist=True)
    client = mlflow.MlflowClient()
    total = 0
    with tracking_errors("cannot tag the sweep's runs"):
        for item in planned:
            runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                      filter_string=f"tags.`{TAG_DVC_EXP}` = '{item.name}'")
            for run in runs:
                for key, value in ((TAG_TUNE, grid_name), (TAG_POINT, item.point), (TAG_SEED, str(item.seed))):
                    client.set_tag(run.info.run_id, key, value)
            item.runs_tagged = len(runs)
            total += len(runs)
    return total


def save_record(grid: Grid, seeds: list[int], planned: list[Planned]) -> Path:
    path = record_path(grid.name)
    write_json(path, {"name": grid.name, "params": grid.params, "seed_keys": list(grid.seed_keys), "seeds": seeds,
                      "experiments": [asdict(p) for p in planned]})
    return path


def load_record(name: str) -> dict:
    path = record_path(name)
    if not path.is_file():
        raise TuneError(f"no tuning record {path}: run `musicid exp tune GRID.yaml` first")
    return read_json(path)


def latest_tune() -> str:
    records = sorted(TUNE_REPORTS.glob("*/grid.json"), key=lambda p: p.stat().st_mtime)
    if not records:
        raise TuneError(f"no tuning records under {TUNE_REPORTS}: run `musicid exp tune GRID.yaml` first")
    return records[-1].parent.name
