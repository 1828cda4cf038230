"""Work and performance overlap between two datasets (catalogs or manifests), before they are mixed.

Training on one dataset and testing on another leaks when the two share recordings or
compositions under different names (CoverHunterMPS ships a tool for this). Three keys, from the
strongest: the same audio (`content_hash`, decoded samples), the same id (`track_id`, `work_id`),
and the same work title once version markers are dropped ("Song (live)" ~ "song").
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from musicid.errors import MusicidError
from musicid.fsutil import read_json, read_jsonl

CATALOG_NAME = "catalog.json"
EXAMPLES = 10  # overlaps listed per key (every one is counted)


class CompareError(MusicidError, ValueError):
    """A dataset to compare is missing or not a catalog or manifest."""


def load_tracks(path: str | Path) -> list[dict[str, Any]]:
    """Tracks of an ingested folder or its catalog.json, a manifest .jsonl, or a folder of manifests."""
    path = Path(path)
    if path.is_dir() and (path / CATALOG_NAME).is_file():
        path = path / CATALOG_NAME
    if path.is_dir():
        manifests = sorted(path.glob("*.jsonl"))
        if not manifests:
            raise CompareError(f"{path}: no {CATALOG_NAME} and no *.jsonl manifests in it")
        return _unique([row for m in manifests for row in read_jsonl(m)])
    if not path.is_file():
        raise CompareError(f"{path}: not found (an ingested folder, catalog.json, a manifest .jsonl or a folder of them)")
    if path.suffix == ".jsonl":
        return _unique(read_jsonl(path))
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("tracks"), list):
        raise CompareError(f"{path}: not a catalog (no 'tracks' list)")
    return data["tracks"]


def _unique(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per track id; query plans (rows with a query_id) only point at performances listed elsewhere."""
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        if "query_id" not in row:
            seen.setdefault(str(row.get("track_id", len(seen))), row)
    return list(seen.values())


_VERSION_MARK = re.compile(r"\s*[\(\[][^\)\]]*[\)\]]|\s+-\s+.*$")


def work_title(title: str) -> str:
    """A title reduced to its work: version markers in brackets or after ' - ' dropped, case and punctuation folded."""
    base = _VERSION_MARK.sub("", title or "")
    return " ".join(re.sub(r"[^\w]+", " ", base.casefold()).split())


def _index(tracks: list[dict[str, Any]], key: Any) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for track in tracks:
        value = key(track)
        if value:
            found[value].add(str(track.get("track_id", "?")))
    return found


def _overlap(a: dict[str, set[str]], b: dict[str, set[str]]) -> dict[str, Any]:
    shared = sorted(set(a) & set(b))
    return {"count": len(shared), "examples": [{"key": k, "a": sorted(a[k]), "b": sorted(b[k])} for k in shared[:EXAMPLES]]}


def compare_datasets(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """Overlap of performances (same audio, same track id) and works (same work id, same work title)."""
    keys = {
        "performances_by_content_hash": lambda t: t.get("content_hash"),
        "performances_by_track_id": lambda t: t.get("track_id"),
        "works_by_work_id": lambda t: t.get("work_id"),
        "works_by_title": lambda t: work_title(t.get("title", "")),
    }
    report: dict[str, Any] = {"tracks": {"a": len(a), "b": len(b)},
                              "works": {"a": len({t.get("work_id") for t in a}), "b": len({t.get("work_id") for t in b})}}
    for name, key in keys.items():
        report[name] = _overlap(_index(a, key), _index(b, key))
    report["overlap"] = any(report[name]["count"] for name in keys)
    return report
