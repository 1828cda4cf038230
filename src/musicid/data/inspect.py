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


def recommend(durations: list[float], query_duration_s: float, eval_ratio: float = 0.2,
              max_queries_per_track: int = 10) -> dict[str, int]:
    """How a source this size is best split: eval/train tracks and how many queries the eval side holds.

    Eval tracks are `eval_ratio` of the files long enough for a query (at least one, leaving one
    for training); each yields up to `max_queries_per_track` non-overlapping queries.
    """
    usable = sorted((d for d in durations if d >= query_duration_s), reverse=True)
    if len(usable) < 2:
        return {"eval_tracks": 0, "train_tracks": len(durations), "test_queries": 0}
    n_eval = min(len(usable) - 1, max(1, round(eval_ratio * len(usable))))
    per_track = [min(max_queries_per_track, int(d // query_duration_s)) for d in usable[:n_eval]]
    return {"eval_tracks": n_eval, "train_tracks": len(durations) - n_eval, "test_queries": int(sum(per_track))}


def summarize(scan: ScanResult, query_duration_s: float, eval_ratio: float = 0.2) -> dict[str, Any]:
    """Counts, hours, duration histogram, formats, quarantine reasons, readiness and a recommended split."""
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
        "performances_per_work": performances_per_work(scan.tracks),
        "readiness": readiness(durations, query_duration_s),
        "recommended": recommend(durations, query_duration_s, eval_ratio),
    }


def performances_per_work(tracks: list[dict[str, Any]]) -> dict[str, int]:
    """{performances: works with that many}, e.g. {"1": 3, "3": 40}: a works split needs works with ≥ 2."""
    per_work = Counter(t.get("work_id", t["track_id"]) for t in tracks)
    return {str(n): works for n, works in sorted(Counter(per_work.values()).items())}


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


def plot_performances_per_work(scan: ScanResult, out_png: str | Path) -> None:
    """Bar chart of how many works have 1, 2, 3, ... performances, beside the durations histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    counts = performances_per_work(scan.tracks)
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    ax.bar([int(n) for n in counts], list(counts.values()), width=0.8, color="#d8843b", edgecolor="white")
    most = max((int(n) for n in counts), default=1)
    ax.set_xlim(0.5, most + 0.5)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("performances per work")
    ax.set_ylabel("works")
    ax.set_title(f"{sum(counts.values())} works, {len(scan.tracks)} performances")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
