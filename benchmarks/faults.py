"""Fault injection over the whole pipeline: stages × signals × seeds, as a table.

Builds the tests' tiny pipeline (tests/e2e_repo.py: a temporary git + DVC copy of this project on tiny
params, one real `dvc repro`), then for each stage, signal and seed stops the stage at a seeded
random point of its run, reruns it and checks processes, staging, the one-line message and output
hashes (tests/fault_matrix.py says exactly what). Prints a Markdown table (and writes it with
--out); exit 1 if any case fails. `make test` runs every stage with one or two signals
(tests/test_fault_matrix.py); this runs all of them:

    .venv/bin/python benchmarks/faults.py                          # every stage × 3 signals × seeds 0,1
    .venv/bin/python benchmarks/faults.py --stages works-train,pitch-notes-shards --seeds 0,1,2,3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from e2e_repo import STAGES, env_for, make_repo, run  # noqa: E402
from fault_matrix import SIGNALS, format_table, inject, stage_seconds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated (default: every stage)")
    parser.add_argument("--signals", default=",".join(SIGNALS), help="SIGKILL,SIGTERM,SIGINT")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) and the cases (.json beside it)")
    args = parser.parse_args()
    stages, signals = args.stages.split(","), args.signals.split(",")
    unknown = [s for s in stages if s not in STAGES] + [s for s in signals if s not in SIGNALS]
    if unknown:
        parser.error(f"unknown stage or signal {', '.join(unknown)}; stages: {', '.join(STAGES)}; signals: {', '.join(SIGNALS)}")
    with tempfile.TemporaryDirectory(prefix="musicid-faults-") as tmp:
        began = time.monotonic()
        repo, env = make_repo(Path(tmp)), env_for(Path(tmp))
        seconds = stage_seconds(run(["dvc", "repro"], repo, env))
        print(f"tiny pipeline reproduced in {time.monotonic() - began:.0f} s; injecting faults", flush=True)
        outcomes = []
        for stage in stages:
            for how in signals:
                for seed in map(int, args.seeds.split(",")):
                    outcomes.append(inject(repo, env, stage, how, seed, seconds[stage]))
                    o = outcomes[-1]
                    print(f"{stage} {how} seed {seed}: {'pass' if o.ok else 'FAIL'} (kill at {o.kill_at_s:.1f} s"
                          f"{'' if o.killed else ', had finished'})", flush=True)
    table = format_table(outcomes)
    passed = sum(o.ok for o in outcomes)
    print(f"\n{table}\n\n{passed}/{len(outcomes)} cases passed ({sum(o.killed for o in outcomes)} stopped mid-run) "
          f"in {time.monotonic() - began:.0f} s")
    for o in outcomes:
        if not o.ok:
            print(f"\n--- {o.stage} {o.signal} seed {o.seed}: survivors {o.survivors}, staging {o.staging}, "
                  f"mismatched {o.mismatched}, missing {o.missing}\n{o.detail}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
        args.out.with_suffix(".json").write_text(json.dumps([o.row() for o in outcomes], indent=1))
    sys.exit(0 if passed == len(outcomes) else 1)


if __name__ == "__main__":
    main()
