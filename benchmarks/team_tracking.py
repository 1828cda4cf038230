"""Concurrent MLflow writers: the team's server on PostgreSQL against a local SQLite file.

N writer processes each log R runs as a training stage does (params, `epochs` steps of a few metrics,
one small artifact) at the same time. Prints, per backend: runs written, failures (e.g. SQLite's
"database is locked"), wall time and runs per second. The server is started with `musicid team up`
in a temporary folder (PostgreSQL must be installed: `make team-packages`) and purged afterwards.

    .venv/bin/python benchmarks/team_tracking.py                     # 8 writers x 5 runs x 10 epochs
    .venv/bin/python benchmarks/team_tracking.py --writers 16 --runs 10
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path


def _writer(uri: str, writer: int, runs: int, epochs: int, scratch: str, out: "mp.Queue") -> None:
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    import mlflow

    written, failures = 0, []
    artifact = Path(scratch) / f"history-{writer}.csv"
    artifact.write_text("epoch,loss\n" + "".join(f"{e},{1 / (e + 1)}\n" for e in range(epochs)))
    for r in range(runs):
        try:
            mlflow.set_experiment("team-bench")
            with mlflow.start_run(run_name=f"w{writer}-r{r}"):
                mlflow.log_params({"writer": writer, "run": r, "lr": 1e-3, "epochs": epochs})
                for epoch in range(epochs):
                    mlflow.log_metrics({"loss": 1 / (epoch + 1), "val_top1": epoch / epochs}, step=epoch)
                mlflow.log_artifact(str(artifact))
            written += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported, the point of the benchmark
            failures.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
    out.put((written, failures))


def measure(uri: str, writers: int, runs: int, epochs: int, scratch: str) -> dict:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(uri, w, runs, epochs, scratch, out)) for w in range(writers)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    seconds = time.perf_counter() - started
    failures = [f for _, fs in results for f in fs]
    written = sum(w for w, _ in results)
    return {"written": written, "failed": len(failures), "seconds": seconds, "runs_per_s": written / seconds,
            "first_failure": failures[0] if failures else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--runs", type=int, default=5, help="runs per writer")
    ap.add_argument("--epochs", type=int, default=10, help="metric steps per run")
    ap.add_argument("--uri", default=None, help="a running server to measure instead of starting one")
    args = ap.parse_args()

    from musicid.team import down, free_port, up

    with tempfile.TemporaryDirectory(prefix="team-bench-") as tmp:
        rows = {}
        folder = Path(tmp) / "team"
        if args.uri:
            server_uri = args.uri
        else:
            t = time.perf_counter()
            server_uri = up(folder, pg_port=free_port(), mlflow_port=free_port()).tracking_uri
            print(f"musicid team up: {time.perf_counter() - t:.1f} s ({server_uri})")
        try:
            sqlite = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
            import mlflow

            mlflow.MlflowClient(tracking_uri=sqlite).search_experiments()  # migrate once, outside the timing
            rows["SQLite file"] = measure(sqlite, args.writers, args.runs, args.epochs, tmp)
            rows["server + PostgreSQL"] = measure(server_uri, args.writers, args.runs, args.epochs, tmp)
        finally:
            if not args.uri:
                down(folder, purge=True)
    total = args.writers * args.runs
    print(f"\n{args.writers} writers x {args.runs} runs x {args.epochs} metric steps ({total} runs asked for)")
    print(f"{'backend':<22}{'written':>9}{'failed':>8}{'seconds':>9}{'runs/s':>8}  first failure")
    for name, r in rows.items():
        print(f"{name:<22}{r['written']:>9}{r['failed']:>8}{r['seconds']:>9.1f}{r['runs_per_s']:>8.1f}  {r['first_failure']}")


if __name__ == "__main__":
    main()
