"""Thin entry points called by dvc.yaml (`musicid stage NAME`): params in, artifacts out.

Paths are fixed here and in dvc.yaml; everything tunable lives in params.yaml.
"""

from __future__ import annotations

from pathlib import Path

from musicid.config import Params
from musicid.fsutil import atomic_dir, write_json

RAW_ARCHIVE = Path("data/raw/synthetic.tar.gz")
INGESTED = Path("data/ingested")
INGEST_REPORT = Path("reports/ingest")
MANIFESTS = Path("data/manifests")
SHARDS = Path("data/shards")


def synth(params: Params, workers: int | None = None) -> None:
    from musicid.data.synth import build_archive

    build_archive(params.synth, RAW_ARCHIVE, workers=workers)


def ingest(params: Params, workers: int | None = None) -> None:
    from musicid.data.ingest import ingest as run_ingest
    from musicid.data.inspect import plot_durations, summarize

    scan = run_ingest(params.ingest.source, INGESTED, params.ingest, workers=workers)
    report = summarize(scan, params.ingest.query_duration_s)
    with atomic_dir(INGEST_REPORT) as staging:
        write_json(staging / "inspect.json", report)
        plot_durations(scan, staging / "durations.png")
    print(
        f"ingest: {report['files']['decodable']} tracks ({report['total_hours']:.2f} h), "
        f"{report['files']['quarantined']} quarantined → {INGESTED}/quarantine.json"
    )


def prepare(params: Params, workers: int | None = None) -> None:
    from musicid.data.splits import prepare as run_prepare

    summary = run_prepare(INGESTED / "catalog.json", MANIFESTS, params.prepare)
    print(f"prepare: tracks {summary['tracks']}, {summary['queries']} planned queries → {MANIFESTS}")


def shards(params: Params, workers: int | None = None) -> None:
    from musicid.data.ingest import default_workers
    from musicid.data.splits import load_manifests
    from musicid.store import store_summary
    from musicid.store.build import build_split_store

    manifests = load_manifests(MANIFESTS)
    summaries = {}
    with atomic_dir(SHARDS) as staging:
        for split in params.shards.splits:
            build_split_store(
                manifests[split], INGESTED, staging / f"{split}.zarr", params.shards,
                workers=workers or default_workers(), split=split,
            )
            summaries[split] = store_summary(staging / f"{split}.zarr")
        write_json(staging / "summary.json", summaries)
    for split, summary in summaries.items():
        print(f"shards: {split}: {summary['rows']} windows, {summary['file_count']} files → {SHARDS}/{split}.zarr")


STAGES = {"synth": synth, "ingest": ingest, "prepare": prepare, "shards": shards}
