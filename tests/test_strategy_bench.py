"""Strategy A/B harness: ranking tie-breaks, multi-seed statistics (unit), buckets, and one tiny real run."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner

from musicid.cli import main
from musicid.workflows.strategy_bench import BenchRun, aggregate, bucket_files, rank_runs


def _run(strategy: str, seed: int, top1: float, topk: float, queries: int = 40, bucket: str = "all") -> BenchRun:
    return BenchRun(bucket, strategy, seed, queries, top1, topk)


def test_ranking_breaks_ties_by_topk_then_queries() -> None:
    runs = [_run("a", 0, 0.9, 0.95), _run("b", 0, 0.9, 0.97), _run("c", 0, 0.9, 0.97, queries=80), _run("d", 0, 0.95, 0.95)]
    assert [r.strategy for r in rank_runs(runs)] == ["d", "c", "b", "a"]


def test_aggregate_statistics_across_seeds() -> None:
    runs = [_run("random", 0, 0.80, 0.90), _run("random", 1, 0.90, 1.00), _run("random", 2, 0.70, 0.95),
            _run("hybrid", 0, 0.85, 0.90)]
    rows = {row["strategy"]: row for row in aggregate(runs)}
    assert rows["random"] == {
        "strategy": "random", "runs": 3, "mean_top1": 0.8, "min_top1": 0.7, "max_top1": 0.9,
        "stdev_top1": round(statistics.stdev([0.8, 0.9, 0.7]), 4), "mean_topk": 0.95,
    }
    assert rows["hybrid"]["runs"] == 1 and rows["hybrid"]["stdev_top1"] == 0.0
    assert [row["strategy"] for row in aggregate(runs)] == ["hybrid", "random"]  # best mean top-1 first


def test_bucket_files_by_list_and_globs(audio_folder: Path) -> None:
    assert bucket_files(audio_folder, ["w0/w0_v0.wav", "nope.wav"]) == ["w0/w0_v0.wav"]
    assert bucket_files(audio_folder, {"globs": ["w1/*", "*.flac"]}) == [
        "bad/corrupt.flac", "w0/w0_v1.flac", "w1/w1_v0.wav", "w1/w1_v1.flac", "w2/w2_v1.flac"]


@pytest.mark.slow
def test_bench_strategies_end_to_end_with_buckets(audio_folder: Path, tmp_path: Path, mlflow_db: Path) -> None:
    buckets = tmp_path / "buckets.json"
    buckets.write_text(json.dumps({"wav": {"globs": ["w*/*.wav", "w2/*"]}, "all": {"globs": ["w*/*"], "subset": 6}}))
    out = tmp_path / "bench"
    args = ["bench", "strategies", "folder", str(audio_folder), "--strategies", "random,silence_aware", "--seeds", "0",
            "--subset", "0", "--query-duration", "2", "--eval-ratio", "0.2", "--epochs", "1", "--steps", "1",
            "--max-test-queries", "3", "--buckets", str(buckets), "--out", str(out), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{\n"):])
    assert len(report["runs"]) == 2 * 2 and {r["bucket"] for r in report["runs"]} == {"wav", "all"}
    assert report["runs"] == sorted(report["runs"], key=lambda r: (-r["top1"], -r["topk"], -r["num_queries"], r["strategy"], r["seed"]))
    for bucket in ("wav", "all"):
        # every strategy of a bucket and seed answers the same queries
        assert len({r["num_queries"] for r in report["runs"] if r["bucket"] == bucket}) == 1
        assert report["buckets"][bucket]["winner"] in {"random", "silence_aware"}
    assert {row["strategy"]: row["runs"] for row in report["aggregate"]} == {"random": 2, "silence_aware": 2}
    markdown = (out / "report.md").read_text()
    assert "## Winners per bucket" in markdown and "| silence_aware | 2 |" in markdown
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name("musicid-bench-strategies")
    bench_runs = client.search_runs([experiment.experiment_id], "tags.`musicid.stage` = 'bench'")
    assert len(bench_runs) == 4 and {r.data.params["bench.strategy"] for r in bench_runs} == {"random", "silence_aware"}
