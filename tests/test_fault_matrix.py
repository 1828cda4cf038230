"""Kill any stage anywhere (issue 17): every stage of every family, stopped at a seeded random point
of its run under `dvc repro`, then rerun; see tests/fault_matrix.py for what is checked.

One case per stage (the suite's time budget): SIGKILL of the stage's process (the OOM killer,
`kill -9`) for four stages in six, SIGTERM (a CI time limit) and Ctrl-C (SIGINT to dvc's process
group) for one each; the kill point is seeded by the stage's position. The full stages × signals ×
seeds table is `python benchmarks/faults.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from e2e_repo import STAGES, copy_repo, env_for
from fault_matrix import format_table, inject, stage_seconds

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


@pytest.fixture(scope="module")
def workspace(tiny_pipeline: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("faults")
    return {"repo": copy_repo(tiny_pipeline["repo"], tmp), "env": env_for(tmp),
            "seconds": stage_seconds(tiny_pipeline["output"])}


def _signals(index: int) -> list[str]:
    return [{1: "SIGTERM", 4: "SIGINT"}.get(index % 6, "SIGKILL")]


@pytest.mark.parametrize("index, stage", list(enumerate(STAGES)), ids=list(STAGES))
def test_a_stage_stopped_anywhere_leaves_nothing_half_made_and_its_rerun_matches(workspace: dict, index: int,
                                                                               stage: str) -> None:
    seconds = workspace["seconds"].get(stage)
    assert seconds, f"the reproduced pipeline's log has no run time for {stage}"
    outcomes = [inject(workspace["repo"], workspace["env"], stage, how, seed=index, seconds=seconds)
                for how in _signals(index)]
    table = format_table(outcomes)
    print(table)
    assert all(o.ok for o in outcomes), table + "\n" + "\n".join(o.detail for o in outcomes if o.detail)
