"""Evaluate an identifier on planned queries × conditions: hit rates, offsets, latency, plots."""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from musicid.audio import decode, to_model_rate
from musicid.audio.augment import NoiseBank
from musicid.config import EvaluateConfig
from musicid.families.fingerprint.open_set import OpenSetThreshold
from musicid.families.fingerprint.queries import APART_CONDITIONS, MAIN_CONDITIONS, NOISE_KINDS, render_query
from musicid.fsutil import atomic_file, write_json



class Matcher(Protocol):
    """What evaluation needs of an identifier: embed once (a Query with .segments), match with and
    without the true track."""

    def query_embeddings(self, signal: np.ndarray) -> Any: ...

    def match(self, query: Any, top: int | None = None, exclude_track: int | None = None) -> list[dict[str, Any]]: ...


def select_queries(planned: list[dict[str, Any]], cfg: EvaluateConfig) -> list[dict[str, Any]]:
    """Every planned query, or a seeded subset of `max_queries` (same subset for every condition)."""
    if not cfg.max_queries or len(planned) <= cfg.max_queries:
        return planned
    keep = np.sort(np.random.default_rng(cfg.seed).choice(len(planned), cfg.max_queries, replace=False))
    return [planned[i] for i in keep]


def _rate(hits: list[bool]) -> float:
    return round(float(np.mean(hits)), 4) if hits else 0.0


def impostor_score(matcher: Matcher, views: Any, own_track: int | None) -> float | None:
    """The best score of a query answered as if its own track were not indexed (None: track unknown)."""
    if own_track is None:
        return None
    outside = matcher.match(views, top=1, exclude_track=own_track)
    return outside[0]["score"] if outside else 0.0


def calibrate(rows: list[dict[str, Any]], target_fpr: float) -> dict[str, Any] | None:
    """The open-set threshold curve and what it does, per query length.

    Negatives: every query answered with its own track left out of the index (impostor_score).
    The curve (OpenSetThreshold) lets at most `target_fpr` of them through at each length; FPR
    and TPR (top-1 right *and* above the threshold; main conditions) are reported per length.
    """
    negatives = [r for r in rows if r.get("impostor_score") is not None]
    if not negatives:
        return None
    lengths = sorted({r["duration_s"] for r in rows})
    segments = {length: float(np.mean([r.get("segments", 1) for r in negatives if r["duration_s"] == length]))
                for length in lengths}
    curve = OpenSetThreshold.fit(
        [np.array([r["impostor_score"] for r in negatives if r["duration_s"] == length]) for length in lengths],
        [segments[length] for length in lengths], target_fpr)
    main = [r for r in rows if r["condition"] in MAIN_CONDITIONS]

    def rates(selected: list[dict[str, Any]], in_main: list[dict[str, Any]]) -> dict[str, Any]:
        outside = [r for r in selected if r.get("impostor_score") is not None]
        accepted = [bool(r["top1"] and r["score"] is not None and r["score"] >= curve.at(r.get("segments", 1)))
                    for r in in_main]
        return {"fpr": _rate([r["impostor_score"] >= curve.at(r.get("segments", 1)) for r in outside]),
                "tpr": _rate(accepted), "negatives": len(outside), "positives": len(in_main)}

    by_length = {f"{length:g}s": rates([r for r in rows if r["duration_s"] == length],
                                       [r for r in main if r["duration_s"] == length]) for length in lengths}
    by_condition = {
        condition: {f"{length:g}s": rates([r for r in rows if r["condition"] == condition and r["duration_s"] == length],
                                          [r for r in rows if r["condition"] == condition and r["duration_s"] == length])
                    for length in lengths}
        for condition in sorted({r["condition"] for r in rows})
    }
    thresholds = {f"{length:g}s": round(curve.at(segments[length]), 6) for length in lengths}
    return {"target_fpr": target_fpr, **curve.to_dict(), "threshold_by_length": thresholds, **rates(rows, main),
            "by_length": by_length, "by_condition": by_condition}


def summarize(rows: list[dict[str, Any]], conditions: list[str], target_fpr: float | None = None) -> dict[str, Any]:
    """Top-1/top-5 per length × condition, main-condition aggregates, offsets, latency and the open-set threshold."""
    by_cell: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_cell[(row["condition"], row["duration_s"])].append(row)
    lengths = sorted({row["duration_s"] for row in rows})
    table = {
        condition: {
            f"{length:g}s": {
                "top1": _rate([r["top1"] for r in by_cell[(condition, length)]]),
                "top5": _rate([r["top5"] for r in by_cell[(condition, length)]]),
                "n": len(by_cell[(condition, length)]),
            }
            for length in lengths
        }
        for condition in conditions
    }
    main = [r for r in rows if r["condition"] in MAIN_CONDITIONS]
    main_by_length = {
        f"{length:g}s": {
            "top1": _rate([r["top1"] for r in main if r["duration_s"] == length]),
            "top5": _rate([r["top5"] for r in main if r["duration_s"] == length]),
            "n": sum(1 for r in main if r["duration_s"] == length),
        }
        for length in lengths
    }
    hits = [r for r in rows if r["top1"]]
    latencies = np.array([r["latency_ms"] for r in rows]) if rows else np.zeros(1)
    return {
        "queries": len(rows),
        "main": {"top1": _rate([r["top1"] for r in main]), "top5": _rate([r["top5"] for r in main]), "by_length": main_by_length},
        "by_condition": table,
        "offset_accuracy": _rate([r["offset_ok"] for r in hits]),
        "offset_median_error_s": round(float(np.median([r["offset_error_s"] for r in hits])), 3) if hits else None,
        "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 2), "p95": round(float(np.percentile(latencies, 95)), 2)},
        "errors": sum(1 for r in rows if r.get("error")),
        "open_set": calibrate(rows, target_fpr) if target_fpr is not None else None,
    }


def evaluate_queries(
    planned: list[dict[str, Any]], audio_root: Path, matcher: Matcher, sample_rate: int, cfg: EvaluateConfig,
    music_bed: torch.Tensor, progress: bool = True, ref_positions: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Render each (query, condition), identify it, and record hit/offset/latency per query.

    `music_bed` (1, n) at `sample_rate` is the background music of the noise conditions: music that
    is in no index (the stage renders one with the synthesiser). With `ref_positions` (ref name →
    index position) every query is also answered as if its track were not indexed; its best score
    then ("impostor_score") is what an out-of-catalog query of that length and condition scores.
    """
    queries = select_queries(planned, cfg)
    bank = NoiseBank(sample_rate, tuple(k for k in NOISE_KINDS if k != "music"), seed=cfg.seed + 101)
    tracks: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    total = len(queries) * len(cfg.conditions)
    with tqdm(total=total, desc="evaluate: identify", unit="query", disable=not progress) as bar:
        for q_index, query in enumerate(queries):
            if query["track_id"] not in tracks:
                audio = decode(audio_root / query["path"])
                tracks[query["track_id"]] = to_model_rate(audio.samples, audio.sample_rate, sample_rate)
            for c_index, condition in enumerate(cfg.conditions):
                signal, details = render_query(
                    tracks[query["track_id"]], sample_rate, query["start_s"], query["duration_s"], condition,
                    (cfg.snr_db_min, cfg.snr_db_max), bank, seed=cfg.seed * 1_000_003 + q_index * 17 + c_index, music_bed=music_bed,
                )
                began = time.perf_counter()
                views = matcher.query_embeddings(signal)
                matches = matcher.match(views)
                latency = (time.perf_counter() - began) * 1000
                impostor = impostor_score(matcher, views, (ref_positions or {}).get(query["track_id"]))
                refs = [m["ref"] for m in matches]
                top1 = bool(refs) and refs[0] == query["track_id"]
                offset_error = abs(matches[0]["offset_s"] - query["start_s"]) if top1 else None
                rows.append({
                    "query_id": query["query_id"], "track_id": query["track_id"], "duration_s": query["duration_s"],
                    "start_s": query["start_s"], **details, "top1": top1, "top5": query["track_id"] in refs[:5],
                    "predicted": refs[0] if refs else None, "score": matches[0]["score"] if matches else None,
                    "offset_s": matches[0]["offset_s"] if matches else None,
                    "offset_error_s": round(offset_error, 3) if offset_error is not None else None,
                    "offset_ok": offset_error is not None and offset_error <= cfg.offset_tolerance_s,
                    "latency_ms": round(latency, 2), "impostor_score": impostor, "segments": views.segments,
                })
                bar.update()
    return rows


def write_reports(rows: list[dict[str, Any]], metrics: dict[str, Any], out_dir: Path, conditions: list[str]) -> None:
    """metrics.json, per-query JSON lines, a hit-rate CSV for `dvc plots` and a PNG."""
    from musicid.fsutil import write_jsonl

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", metrics)
    write_jsonl(out_dir / "queries.jsonl", rows)
    with atomic_file(out_dir / "hit_rate.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["length_s", *[f"{c}_top1" for c in conditions], "main_top1", "main_top5"])
        for length, cell in sorted(metrics["main"]["by_length"].items(), key=lambda item: float(item[0][:-1])):
            writer.writerow([float(length[:-1]), *[metrics["by_condition"][c][length]["top1"] for c in conditions],
                             cell["top1"], cell["top5"]])
    plot_hit_rates(metrics, conditions, out_dir / "hit_rate.png")


def plot_hit_rates(metrics: dict[str, Any], conditions: list[str], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    for condition in conditions:
        cells = dict(sorted(metrics["by_condition"][condition].items(), key=lambda item: float(item[0][:-1])))
        lengths = [float(k[:-1]) for k in cells]
        style = "--" if condition in APART_CONDITIONS else "-"
        ax.plot(lengths, [cells[k]["top1"] for k in cells], style, marker="o", label=condition)
    ax.set_xscale("log")
    ticks = sorted(metrics["main"]["by_length"], key=lambda label: float(label[:-1]))
    ax.set_xticks([float(k[:-1]) for k in ticks], labels=ticks)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("query length")
    ax.set_ylabel("top-1 hit rate")
    ax.set_title("Identification of held-out tracks")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def key_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json flattened to the names MLflow, the registry and release gates use.

    main_top1, main_top1_3s, main_top5_3s, <condition>_top1_3s, offset_accuracy, latency_p95_ms, ...
    """
    flat = {
        "main_top1": metrics["main"]["top1"], "main_top5": metrics["main"]["top5"],
        "offset_accuracy": metrics["offset_accuracy"], "queries": metrics["queries"], "errors": metrics["errors"],
        "latency_p50_ms": metrics["latency_ms"]["p50"], "latency_p95_ms": metrics["latency_ms"]["p95"],
    }
    for length, cell in metrics["main"]["by_length"].items():
        flat[f"main_top1_{length}"] = cell["top1"]
        flat[f"main_top5_{length}"] = cell["top5"]
    for condition, cells in metrics["by_condition"].items():
        for length, cell in cells.items():
            flat[f"{condition}_top1_{length}"] = cell["top1"]
    open_set = metrics.get("open_set")
    if open_set:
        flat |= {"open_set_fpr": open_set["fpr"], "open_set_tpr": open_set["tpr"]}
        for length, cell in open_set["by_length"].items():
            flat[f"tpr_at_fpr_{length}"] = cell["tpr"]
            flat[f"fpr_{length}"] = cell["fpr"]
            flat[f"min_score_{length}"] = open_set["threshold_by_length"][length]
    return {name: float(value) for name, value in flat.items() if value is not None}
