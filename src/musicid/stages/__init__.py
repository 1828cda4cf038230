"""Thin entry points called by dvc.yaml (`musicid stage NAME`): params in, artifacts out.

Common stages (synth, ingest, prepare) feed every family; each family adds its own stages as
`<family>-<stage>` (fingerprint-train, works-train, ...). Paths come from `musicid.layout`;
everything tunable lives in params.yaml.
"""

from __future__ import annotations

from typing import Callable

from musicid.config import Params
from musicid.fsutil import atomic_dir, write_json
from musicid.layout import CATALOG, INGEST_REPORT, INGESTED, MANIFESTS, RAW_ARCHIVE


def synth(params: Params, workers: int | None = None) -> None:
    from musicid.data.synth import build_archive

    build_archive(params.synth, RAW_ARCHIVE, workers=workers)


def ingest(params: Params, workers: int | None = None) -> None:
    from musicid.data.ingest import ingest as run_ingest
    from musicid.data.inspect import plot_durations, plot_performances_per_work, summarize

    scan = run_ingest(params.ingest.source, INGESTED, params.ingest, workers=workers)
    report = summarize(scan, params.ingest.query_duration_s)
    with atomic_dir(INGEST_REPORT) as staging:
        write_json(staging / "inspect.json", report)
        plot_durations(scan, staging / "durations.png")
        plot_performances_per_work(scan, staging / "performances.png")
    print(
        f"ingest: {report['files']['decodable']} tracks ({report['total_hours']:.2f} h), "
        f"{report['files']['quarantined']} quarantined → {INGESTED}/quarantine.json"
    )


def prepare(params: Params, workers: int | None = None) -> None:
    from musicid.data.splits import prepare as run_prepare

    summary = run_prepare(CATALOG, MANIFESTS, params.prepare)
    print(f"prepare: tracks {summary['tracks']}, {summary['queries']} planned queries → {MANIFESTS}")


COMMON_STAGES: dict[str, Callable[..., None]] = {"synth": synth, "ingest": ingest, "prepare": prepare}


def all_stages() -> dict[str, Callable[..., None]]:
    """Every stage dvc.yaml can call: the common ones, then each family's as `<family>-<stage>`."""
    from musicid.families import FAMILIES

    stages = dict(COMMON_STAGES)
    for family in FAMILIES.values():
        stages.update({f"{family.name}-{name}": run for name, run in family.stages.items()})
    return stages
