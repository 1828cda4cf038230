"""Index doctor: which references take the wrong answers (hubs), why, and the open-set threshold.

Given labelled queries (truth.json of ../shared/bench/make_queries.py: file → {ref, start_s,
condition, length_s}), every query is answered twice from one embedding: against the whole index,
and as if its own track were not indexed (FAISS skips that track's ids). The first gives the wrong
top-1 answers and which references took them; the second gives what an out-of-catalog query of
that length and condition scores, so the open-set threshold is calibrated on real music.

Per reference, from the index alone:
- density: mean similarity of its segments to their 10 nearest segments of *other* tracks. A hub
  sits where many tracks' segments are near, so degraded queries land on it.
- repetitive: share of its segments with a near-duplicate (cosine ≥ 0.9) in the same track more
  than 2 s away. Such segments carry no alignment information: a hit on them aligns at every
  offset, and offset voting cannot tell the true offset from the others.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from musicid.audio import DecodeError, decode, to_model_rate
from musicid.families.fingerprint.evaluate import calibrate, impostor_score
from musicid.families.fingerprint.queries import MAIN_CONDITIONS

DENSITY_NEIGHBORS = 10
REPEAT_SIMILARITY = 0.9
REPEAT_MIN_GAP_S = 2.0
BENCH_MAIN = set(MAIN_CONDITIONS) | {"phone"}  # make_queries.py calls the telephone condition "phone"


def reference_profiles(index: Any, progress: bool = True) -> list[dict[str, Any]]:
    """Per reference: segments, density (to other tracks), repetitive share (within its own track).

    Density is the index's own per-segment density (index.density_neighbors), averaged per
    reference; an index built without it gets it computed here the same way.
    """
    from musicid.index.build import segment_density

    vectors = index.vectors()
    density = index.density
    if density is None:
        k = min(DENSITY_NEIGHBORS, max(1, index.n_vectors - 1))
        density = segment_density(index.index, vectors, index.track_index, k, progress)
    profiles = []
    for track in tqdm(range(len(index.refs)), desc="doctor: reference profiles", unit="ref", disable=not progress):
        ids = index.vector_ids(track)
        if not len(ids):
            profiles.append({"ref": index.refs[track]["ref"], "segments": 0, "density": None, "repetitive": None})
            continue
        own = vectors[ids]
        offsets = index.offset_s[ids]
        far = np.abs(offsets[:, None] - offsets[None, :]) > REPEAT_MIN_GAP_S
        repetitive = float((((own @ own.T) >= REPEAT_SIMILARITY) & far).any(axis=1).mean())
        profiles.append({"ref": index.refs[track]["ref"], "segments": int(len(ids)),
                         "density": round(float(np.mean(density[ids])), 4), "repetitive": round(repetitive, 4)})
    return profiles


def answer_queries(identifier: Any, queries: list[tuple[Path, dict[str, Any]]], progress: bool = True) -> list[dict[str, Any]]:
    """One row per query: predicted ref, score, hit, and impostor_score (its own track left out)."""
    positions = {ref["ref"]: i for i, ref in enumerate(identifier.index.refs)}
    by_basename = {Path(ref).name: i for ref, i in positions.items()}
    rows = []
    for path, truth in tqdm(queries, desc="doctor: queries", unit="query", disable=not progress):
        try:
            audio = decode(path)
        except DecodeError as exc:
            rows.append({"query": path.name, "error": exc.reason})
            continue
        signal = to_model_rate(audio.samples, audio.sample_rate, identifier.sample_rate)
        views = identifier.query_embeddings(signal)
        matches = identifier.match(views)
        own = positions.get(truth["ref"], by_basename.get(Path(truth["ref"]).name))
        predicted = matches[0]["ref"] if matches else None
        rows.append({
            "query": path.name, "ref": truth["ref"], "condition": truth["condition"], "duration_s": float(truth["length_s"]),
            "predicted": predicted, "score": matches[0]["score"] if matches else None,
            "top1": predicted is not None and Path(predicted).name == Path(truth["ref"]).name,
            "impostor_score": impostor_score(identifier, views, own),
            "segments": views.segments,
        })
    return rows


def diagnose(rows: list[dict[str, Any]], profiles: list[dict[str, Any]], target_fpr: float, worst: int = 5) -> dict[str, Any]:
    """Hub table (wrong answers taken per reference, with its profile), hub share, and the open-set calibration."""
    answered = [r for r in rows if "error" not in r]
    main = [r for r in answered if r["condition"] in BENCH_MAIN]
    wrong = Counter(r["predicted"] for r in main if not r["top1"] and r["predicted"] is not None)
    n_wrong = sum(wrong.values())
    by_ref = {p["ref"]: p for p in profiles}
    densities = np.array([p["density"] for p in profiles if p["density"] is not None])
    hubs = [by_ref.get(ref, {"ref": ref}) | {"wrong_taken": count, "share": round(count / n_wrong, 4)}
            for ref, count in wrong.most_common()]
    lengths = sorted({r["duration_s"] for r in main})
    top1 = {f"{length:g}s": round(float(np.mean([r["top1"] for r in main if r["duration_s"] == length])), 4)
            for length in lengths}
    # calibrate() reads the project's condition names; make_queries.py's "phone" is our "telephone"
    renamed = [r | {"condition": "telephone" if r["condition"] == "phone" else r["condition"]} for r in answered]
    return {
        "queries": len(rows), "errors": len(rows) - len(answered), "main_queries": len(main), "main_top1": top1,
        "wrong_main": n_wrong, f"worst{worst}_share": round(sum(c for _, c in wrong.most_common(worst)) / n_wrong, 4) if n_wrong else 0.0,
        "density_median": round(float(np.median(densities)), 4) if len(densities) else None,
        "hubs": hubs, "open_set": calibrate(renamed, target_fpr),
    }


def format_report(report: dict[str, Any], show: int = 10) -> str:
    lines = [f"{report['main_queries']} main-condition queries, {report['wrong_main']} wrong top-1; "
             f"the 5 worst references took {report['worst5_share']:.1%} of them",
             "main top-1: " + "  ".join(f"{k} {v:.3f}" for k, v in report["main_top1"].items()),
             f"{'reference':<48}{'wrong':>6}{'share':>7}{'density':>9}{'repet.':>8}{'segs':>6}"]
    for hub in report["hubs"][:show]:
        density = f"{hub['density']:.3f}" if hub.get("density") is not None else "–"
        repetitive = f"{hub['repetitive']:.2f}" if hub.get("repetitive") is not None else "–"
        lines.append(f"{hub['ref'][:47]:<48}{hub['wrong_taken']:>6}{hub['share']:>7.1%}{density:>9}{repetitive:>8}"
                     f"{hub.get('segments', 0):>6}")
    if report.get("density_median") is not None:
        lines.append(f"(median density over all references: {report['density_median']:.3f})")
    open_set = report.get("open_set")
    if open_set:
        lines.append(f"open set (FPR ≤ {open_set['target_fpr']:g}), on {open_set['negatives']} queries with their own "
                     f"track left out: overall TPR {open_set['tpr']:.3f} FPR {open_set['fpr']:.4f}")
        lines += [f"  {k:>4}: min score {open_set['threshold_by_length'][k]:.4f}  TPR {v['tpr']:.3f}  FPR {v['fpr']:.3f}"
                  for k, v in open_set["by_length"].items()]
    return "\n".join(lines)
