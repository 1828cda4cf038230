"""Describe a data source and decide whether it is ready for a smoke run.

The same summary backs `musicid data inspect`, `musicid data check-ready` and the `ingest` stage's
report, so what a user sees before ingesting is what the pipeline will get.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from musicid.data.ingest import CATALOG, QUARANTINE, ScanResult
from musicid.fsutil import read_json

MIN_FILES_FOR_SMOKE = 2
DURATION_BINS_S = [0, 5, 10, 20, 30, 60, 90, 120, 180, 300, 600, float("inf")]


def _bin_label(low: float, high: float) -> str:
    return f">={low:g}s" if high == float("inf") else f"{low:g}-{high:g}s"


def readiness(durations: list[float], query_duration_s: float) -> dict[str, Any]:
    """`ready_for_smoke` needs at least 2 decodable files and at least 2 as long as a query."""
    long_enough = sum(1 for d in durations if d >= query_duration_s)
    reasons = []
    if len(durations) < MIN_FILES_FOR_SMOKE:
        reasons.append(f"only {len(durations)} decodable audio file(s); need at least {MIN_FILES_FOR_SMOKE}")
    if long_enough < MIN_FILES_FOR_SMOKE:
        reasons.append(
            f"only {long_enough} file(s) are at least {query_duration_s:g} s long; need at least {MIN_FILES_FOR_SMOKE}"
        )
    return {
        "ready_for_smoke": not reasons,
        "decodable_files": len(durations),
        "files_long_enough": long_enough,
        "query_duration_s": query_duration_s,
        "reasons": reasons,
    }


def summarize(scan: ScanResult, query_duration_s: float) -> dict[str, Any]:
    """Counts, hours, duration histogram, formats, quarantine reasons and readiness."""
    durations = [float(t["duration_s"]) for t in scan.tracks]
    histogram = {
        _bin_label(lo, hi): int(sum(lo <= d < hi for d in durations))
        for lo, hi in zip(DURATION_BINS_S[:-1], DURATION_BINS_S[1:])
    }
    return {
        "files": {
            "audio": len(scan.tracks) + len(scan.quarantined),
            "decodable": len(scan.tracks),
            "quarantined": len(scan.quarantined),
            "non_audio": len(scan.ignored),
        },
        "quarantine_reasons": dict(Counter(q["reason"] for q in scan.quarantined)),
        "total_hours": round(sum(durations) / 3600.0, 4),
        "duration_s": {
            "min": round(min(durations), 3) if durations else 0.0,
            "median": round(float(np.median(durations)), 3) if durations else 0.0,
            "max": round(max(durations), 3) if durations else 0.0,
            "histogram": histogram,
        },
        "formats": dict(Counter(f"{t['format']}/{t['subtype']}" for t in scan.tracks)),
        "sample_rates": {str(k): v for k, v in Counter(t["sample_rate"] for t in scan.tracks).items()},
        "channels": {str(k): v for k, v in Counter(t["channels"] for t in scan.tracks).items()},
        "works": len({t.get("work_id", t["track_id"]) for t in scan.tracks}),
        "readiness": readiness(durations, query_duration_s),
    }


def load_ingested(path: str | Path) -> ScanResult:
    """Read an `ingest` output folder back as a ScanResult (no decoding needed)."""
    path = Path(path)
    return ScanResult(
        tracks=read_json(path / CATALOG)["tracks"],
        quarantined=read_json(path / QUARANTINE)["files"] if (path / QUARANTINE).exists() else [],
    )


def plot_durations(scan: ScanResult, out_png: str | Path) -> None:
    """Histogram of track durations for the inspect report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    durations = [float(t["duration_s"]) for t in scan.tracks]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    ax.hist(durations, bins=min(30, max(5, len(durations) // 3 or 5)), color="#3b7dd8", edgecolor="white")
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("tracks")
    ax.set_title(f"{len(durations)} decodable tracks, {sum(durations) / 3600:.2f} h")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
