"""A/B harness for slice strategies: train → index → evaluate once per strategy and seed, same query budget.

Every strategy of a seed shares that seed's ingested subset, split and planned queries (capped at
`max_test_queries`), so top-1 differences come from the strategy alone. The strategy applies to
the training windows (`shards.strategy`, target "training") or to the evaluation queries
(`prepare.query_strategy`, target "queries"). Buckets run the harness on named groups of files.
"""

from __future__ import annotations

import fnmatch
import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from musicid.config import Params
from musicid.fsutil import read_json, write_json
from musicid.workflows.chain import CHAIN, FP, link_files, pick_subset, run_chain, with_updates

TOP_K = 5


@dataclass(frozen=True)
class BenchRun:
    bucket: str
    strategy: str
    seed: int
    num_queries: int
    top1: float
    topk: float


def rank_runs(runs: list[BenchRun]) -> list[BenchRun]:
    """Best first: by top-1, then top-k, then the number of queries (more evidence wins a tie)."""
    return sorted(runs, key=lambda r: (-r.top1, -r.topk, -r.num_queries, r.strategy, r.seed))


def aggregate(runs: list[BenchRun]) -> list[dict[str, Any]]:
    """Per strategy across seeds (and buckets): runs, mean/min/max/stdev of top-1, mean top-k; best mean first."""
    by_strategy: dict[str, list[BenchRun]] = {}
    for run in runs:
        by_strategy.setdefault(run.strategy, []).append(run)
    rows = []
    for strategy, group in by_strategy.items():
        top1 = [r.top1 for r in group]
        rows.append({
            "strategy": strategy, "runs": len(group), "mean_top1": round(statistics.fmean(top1), 4),
            "min_top1": min(top1), "max_top1": max(top1),
            "stdev_top1": round(statistics.stdev(top1), 4) if len(top1) > 1 else 0.0,
            "mean_topk": round(statistics.fmean(r.topk for r in group), 4),
        })
    return sorted(rows, key=lambda row: (-row["mean_top1"], -row["mean_topk"], row["strategy"]))


def bucket_files(root: Path, spec: Any) -> list[str]:
    """Files of a bucket: a list of relative paths, or {"globs": [...]} matched against relative paths."""
    from musicid.audio import list_files

    audio, _ = list_files(root)
    if isinstance(spec, list):
        wanted = set(spec)
        return [rel for rel in audio if rel in wanted]
    globs = spec.get("globs") or spec.get("files") or []
    return [rel for rel in audio if any(fnmatch.fnmatch(rel, pattern) for pattern in globs)]


def run_bucket(name: str, source: Path, out: Path, params: Params, strategies: list[str], seeds: list[int],
               subset: int, target: str) -> list[BenchRun]:
    """All strategies × seeds on one source folder; each run's artifacts under out/seed<S>/<strategy>/."""
    from musicid.tracking import stage_run

    runs = []
    for seed in seeds:
        seed_dir = out / f"seed{seed}"
        chosen = seed_dir / "subset"
        pick_subset(source, subset, seed, chosen)
        seeded = with_updates(params, {
            "ingest": {"source": str(chosen.resolve())}, "prepare": {"seed": seed},
            "fingerprint.train": {"seed": seed}, "fingerprint.evaluate": {"seed": seed},
            "fingerprint.shards": {"seed": seed},
        })
        common = seed_dir / "common"
        run_chain(common, seeded, ("ingest", "prepare"))
        for strategy in strategies:
            update = {"fingerprint.shards": {"strategy": strategy}} if target == "training" else {"prepare": {"query_strategy": strategy}}
            run_params = with_updates(seeded, update)
            work = seed_dir / strategy
            (work / "data").mkdir(parents=True, exist_ok=True)
            for shared in ("ingested", "manifests") if target == "training" else ("ingested",):
                link = work / "data" / shared
                if not link.exists():
                    link.symlink_to((common / "data" / shared).resolve(), target_is_directory=True)
            stages = CHAIN[2:-1] if target == "training" else CHAIN[1:-1]
            run_chain(work, run_params, stages)
            metrics = read_json(work / FP.eval_report / "metrics.json")
            run = BenchRun(name, strategy, seed, int(metrics["queries"]), float(metrics["main"]["top1"]),
                           float(metrics["main"]["top5"]))
            runs.append(run)
            with stage_run("bench", run_params.tracking, {"bench": {"bucket": name, "strategy": strategy, "seed": seed,
                                                                    "subset": subset, "target": target}}) as tracked:
                tracked.log_metrics({"top1": run.top1, f"top{TOP_K}": run.topk, "num_queries": run.num_queries})
    return runs


def bench_strategies(source: Path, out: Path, params: Params, strategies: list[str], seeds: list[int], subset: int,
                     target: str = "training", buckets: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole harness; writes out/report.json and out/report.md and returns the report."""
    runs: list[BenchRun] = []
    winners = {}
    for name, spec in (buckets or {"all": None}).items():
        if spec is None:
            folder, size = source, subset
        else:
            files = bucket_files(source, spec)
            if not files:
                raise ValueError(f"bucket {name!r} matches no audio file under {source}")
            folder = out / "buckets" / name
            link_files(source, files, folder)
            size = int(spec.get("subset", subset)) if isinstance(spec, dict) else subset
        bucket_runs = run_bucket(name, folder, out / name, params, strategies, seeds, size, target)
        runs += bucket_runs
        winners[name] = aggregate(bucket_runs)[0]["strategy"]
    report = {
        "source": str(source), "target": target, "subset": subset, "seeds": seeds, "strategies": strategies,
        "query_duration_s": params.prepare.query_lengths_s, "max_test_queries": params.fingerprint.evaluate.max_queries,
        "runs": [asdict(r) for r in rank_runs(runs)], "aggregate": aggregate(runs),
        "buckets": {name: {"winner": winner, "aggregate": aggregate([r for r in runs if r.bucket == name])}
                    for name, winner in winners.items()},
    }
    write_json(out / "report.json", report)
    (out / "report.md").write_text(markdown_report(report))
    return report


def markdown_report(report: dict[str, Any]) -> str:
    lines = [
        f"# Slice-strategy A/B ({report['target']} windows)" if report["target"] == "training"
        else "# Slice-strategy A/B (evaluation queries)",
        "",
        f"Source `{report['source']}`, subset {report['subset']} files, query length {report['query_duration_s']} s, "
        f"at most {report['max_test_queries']} planned test queries, seeds {report['seeds']}.",
        "",
        "## Runs, ranked by top-1, then top-5, then number of queries",
        "",
        "| rank | bucket | strategy | seed | queries | top-1 | top-5 |",
        "|---|---|---|---|---|---|---|",
        *[f"| {i} | {r['bucket']} | {r['strategy']} | {r['seed']} | {r['num_queries']} | {r['top1']:.3f} | {r['topk']:.3f} |"
          for i, r in enumerate(report["runs"], 1)],
        "",
        "## Per strategy across seeds" + (" and buckets" if len(report["buckets"]) > 1 else ""),
        "",
        "| strategy | runs | mean top-1 | min | max | stdev | mean top-5 |",
        "|---|---|---|---|---|---|---|",
        *[f"| {a['strategy']} | {a['runs']} | {a['mean_top1']:.3f} | {a['min_top1']:.3f} | {a['max_top1']:.3f} | "
          f"{a['stdev_top1']:.3f} | {a['mean_topk']:.3f} |" for a in report["aggregate"]],
    ]
    if len(report["buckets"]) > 1:
        lines += ["", "## Winners per bucket", "", "| bucket | winner | its mean top-1 |", "|---|---|---|"]
        for name, bucket in report["buckets"].items():
            lines.append(f"| {name} | {bucket['winner']} | {bucket['aggregate'][0]['mean_top1']:.3f} |")
    return "\n".join(lines) + "\n"


def load_buckets(path: Path) -> dict[str, Any]:
    """A bucket config: {"name": ["rel/path.mp3", ...] | {"globs": ["metal/*"], "subset": 20}, ...}."""
    try:
        buckets = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON bucket config ({exc})") from None
    if not isinstance(buckets, dict) or not buckets:
        raise ValueError(f"{path}: expected an object of bucket name → file list or {{\"globs\": [...]}}")
    return buckets
