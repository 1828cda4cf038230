"""Manifests: split the catalog by work into train/val/test, plan evaluation queries, check leakage.

Splitting is by *work* (a composition and all its versions), after merging works that share
identical audio, so neither a track, a work nor the same audio can appear in two splits. The test
works are held out unseen: the model never trains on them, they are only indexed and queried.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from musicid.config import PrepareConfig
from musicid.errors import LeakageError, NotReadyError
from musicid.fsutil import atomic_dir, read_json, read_jsonl, write_json, write_jsonl

SPLITS = ("train", "val", "test")
MANIFEST_FILES = (*SPLITS, "refs", "queries")
SUMMARY = "summary.json"
TRACK_FIELDS = ("track_id", "work_id", "path", "duration_s", "content_hash")
QUERY_FIELDS = ("query_id", "track_id", "work_id", "start_s", "duration_s")
LEAKAGE_KEYS = ("track_id", "work_id", "content_hash")


def group_works(tracks: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Connected groups of tracks linked by work_id or identical content (union-find)."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for track in tracks:
        parent[find("w:" + track["work_id"])] = find("h:" + track["content_hash"])
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for track in tracks:
        groups[find("w:" + track["work_id"])].append(track)
    return sorted(groups.values(), key=lambda g: min(t["track_id"] for t in g))


def assign_splits(tracks: list[dict[str, Any]], cfg: PrepareConfig) -> dict[str, list[dict[str, Any]]]:
    """Deterministic (by seed) work-level split; at least one group in train and in test.

    With `split_by: source`, tracks that carry their catalog's official split (FMA, MTG-Jamendo)
    keep it; the others are split by work as usual.
    """
    if cfg.split_by == "source":
        official = [t for t in tracks if t.get("source_split") in SPLITS]
        if official:
            rest = [t for t in tracks if t.get("source_split") not in SPLITS]
            splits = {name: [{**t, "split": name} for t in official if t["source_split"] == name] for name in SPLITS}
            if rest:
                for name, extra in assign_splits(rest, cfg.model_copy(update={"split_by": "work"})).items():
                    splits[name].extend(extra)
            if not splits["train"] or not splits["test"]:
                raise NotReadyError("the source's official split leaves train or test empty; use prepare.split_by: work")
            return {name: sorted(splits[name], key=lambda t: t["track_id"]) for name in SPLITS}
    groups = group_works(tracks)
    if len(groups) < 2:
        raise NotReadyError(f"need at least 2 distinct works to split into train and test; found {len(groups)}")
    order = np.random.default_rng(cfg.seed).permutation(len(groups))
    n_test = min(len(groups) - 1, max(1, math.ceil(cfg.test_fraction * len(groups))))
    n_val = min(len(groups) - 1 - n_test, round(cfg.val_fraction * len(groups)))
    split_of_rank = ["test"] * n_test + ["val"] * n_val + ["train"] * (len(groups) - n_test - n_val)
    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    for rank, group_index in enumerate(order):
        splits[split_of_rank[rank]].extend(groups[group_index])
    for name in SPLITS:
        splits[name] = sorted(({**t, "split": name} for t in splits[name]), key=lambda t: t["track_id"])
    return splits


def _query_starts(track: dict[str, Any], position: int, cfg: PrepareConfig, rng: np.random.Generator,
                  audio_root: Path | None) -> dict[float, list[float]]:
    """Start times per query length for one track, by `cfg.query_strategy`."""
    lengths = [length for length in cfg.query_lengths_s if float(track["duration_s"]) - length >= 0]
    if cfg.query_stride_s > 0:  # every stride along the track: the whole held-out track is queried
        return {length: list(np.arange(0.0, float(track["duration_s"]) - length + 1e-9, cfg.query_stride_s))
                for length in lengths}
    if cfg.query_strategy == "random":  # no audio needed
        return {length: [float(rng.uniform(0.0, float(track["duration_s"]) - length)) for _ in range(cfg.queries_per_track)]
                for length in lengths}
    from musicid.audio import decode
    from musicid.audio.slicing import analyze, choose_starts

    if audio_root is None:
        raise ValueError(f"query_strategy {cfg.query_strategy} needs the audio (pass audio_root)")
    audio = decode(audio_root / track["path"])
    analysis = analyze(audio.samples, audio.sample_rate)
    track_rng = np.random.default_rng([cfg.seed, 2, position])
    return {length: [float(s) for s in choose_starts(analysis, length, cfg.queries_per_track, cfg.query_strategy, track_rng)]
            for length in lengths}


def plan_queries(test_tracks: list[dict[str, Any]], cfg: PrepareConfig, audio_root: Path | None = None) -> list[dict[str, Any]]:
    """Query windows (track, start, length) on held-out tracks; degradations are applied at evaluation.

    Starts follow `cfg.query_strategy`; strategies other than random read the audio under audio_root.
    """
    rng = np.random.default_rng([cfg.seed, 1])
    queries = []
    for position, track in enumerate(test_tracks):
        for length, starts in _query_starts(track, position, cfg, rng, audio_root).items():
            for start in starts:
                start = round(start, 3)
                queries.append(
                    {
                        "query_id": f"{track['track_id']}@{start:.3f}+{length:g}s",
                        "track_id": track["track_id"],
                        "work_id": track["work_id"],
                        "path": track["path"],
                        "start_s": start,
                        "duration_s": float(length),
                    }
                )
    return queries


def find_leaks(splits: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Every value of track_id / work_id / content_hash found in more than one split."""
    problems = []
    for key in LEAKAGE_KEYS:
        owners: dict[str, set[str]] = defaultdict(set)
        for name, rows in splits.items():
            for row in rows:
                owners[row[key]].add(name)
        for value, names in sorted(owners.items()):
            if len(names) > 1:
                problems.append(f"{key} {value!r} appears in {', '.join(sorted(names))}")
    return problems


def raise_leaks(problems: list[str], what: str = "split leakage") -> None:
    """LeakageError naming the first problem (and how many more) when there are any."""
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise LeakageError(f"{what}: {problems[0]}{more}")


def check_no_leakage(splits: dict[str, list[dict[str, Any]]]) -> None:
    raise_leaks(find_leaks(splits))


def prepare(catalog_path: str | Path, out_dir: str | Path, cfg: PrepareConfig) -> dict[str, Any]:
    """Write train/val/test/refs/queries manifests (JSON lines) and a summary, atomically."""
    catalog = read_json(catalog_path)
    tracks = catalog["tracks"]
    splits = assign_splits(tracks, cfg)
    check_no_leakage(splits)
    queries = plan_queries(splits["test"], cfg, audio_root=Path(catalog_path).parent)
    refs = sorted((t for name in SPLITS for t in splits[name]), key=lambda t: t["track_id"])
    summary = {
        "seed": cfg.seed,
        "tracks": {name: len(splits[name]) for name in SPLITS} | {"refs": len(refs)},
        "works": {name: len({t["work_id"] for t in splits[name]}) for name in SPLITS},
        "hours": {name: round(sum(t["duration_s"] for t in splits[name]) / 3600, 4) for name in SPLITS},
        "queries": len(queries),
        "query_lengths_s": list(cfg.query_lengths_s),
    }
    with atomic_dir(out_dir) as staging:
        for name in SPLITS:
            write_jsonl(staging / f"{name}.jsonl", splits[name])
        write_jsonl(staging / "refs.jsonl", refs)
        write_jsonl(staging / "queries.jsonl", queries)
        write_json(staging / SUMMARY, summary)
    return summary


def load_manifests(manifest_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    manifest_dir = Path(manifest_dir)
    return {name: read_jsonl(manifest_dir / f"{name}.jsonl") for name in MANIFEST_FILES}


def validate_manifests(manifest_dir: str | Path) -> dict[str, Any]:
    """Structure and leakage check of a manifest folder; returns {ok, problems, counts}."""
    manifest_dir = Path(manifest_dir)
    problems: list[str] = []
    missing = [f"{name}.jsonl" for name in MANIFEST_FILES if not (manifest_dir / f"{name}.jsonl").is_file()]
    if not manifest_dir.is_dir():
        return {"ok": False, "problems": [f"{manifest_dir}: not a folder"], "counts": {}}
    if missing:
        return {"ok": False, "problems": [f"missing manifest file(s): {', '.join(missing)}"], "counts": {}}
    try:
        manifests = load_manifests(manifest_dir)
    except ValueError as exc:
        return {"ok": False, "problems": [f"unreadable manifest: {exc}"], "counts": {}}
    for name in MANIFEST_FILES:
        fields = QUERY_FIELDS if name == "queries" else TRACK_FIELDS
        for line, row in enumerate(manifests[name], start=1):
            absent = [f for f in fields if f not in row]
            if absent:
                problems.append(f"{name}.jsonl line {line}: missing field(s) {', '.join(absent)}")
                break
    if not problems:
        splits = {name: manifests[name] for name in SPLITS}
        problems.extend(find_leaks(splits))
        split_ids = {t["track_id"] for name in SPLITS for t in manifests[name]}
        ref_ids = {t["track_id"] for t in manifests["refs"]}
        if split_ids != ref_ids:
            problems.append(f"refs.jsonl differs from train+val+test ({len(ref_ids ^ split_ids)} track(s) differ)")
        test_tracks = {t["track_id"]: t for t in manifests["test"]}
        for query in manifests["queries"]:
            track = test_tracks.get(query["track_id"])
            if track is None:
                problems.append(f"query {query['query_id']} is not on a test track")
            elif query["start_s"] + query["duration_s"] > track["duration_s"] + 1e-3:
                problems.append(f"query {query['query_id']} runs past the end of its track")
        if not manifests["train"]:
            problems.append("train.jsonl is empty")
        if not manifests["test"]:
            problems.append("test.jsonl is empty")
    counts = {name: len(rows) for name, rows in manifests.items()}
    return {"ok": not problems, "problems": problems, "counts": counts}
