"""Work-identification splits: CoverHunterMPS's four knobs, leak-free by construction and by check.

Works (after merging works that share identical audio) with at least `min_performances` are
eligible for evaluation. A seeded share of them is kept *unseen* for test and for val: none of
their performances is ever trained on. Of the remaining *seen* works, a share of performances is
held out for test and for val (each work keeps at least one performance in train), which measures
recognising a new performance of a known work. Works with fewer performances only train.

Roles: train, val_seen, val_unseen, test_seen, test_unseen. Splits (files): train = train;
val = val_seen + val_unseen; test = test_seen + test_unseen.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from musicid.config import WorksSplitConfig
from musicid.data.splits import group_works, raise_leaks
from musicid.errors import NotReadyError
from musicid.fsutil import atomic_dir, read_json, read_jsonl, write_json, write_jsonl

SPLIT_FILES = ("train", "val", "test")
ROLES = ("train", "val_seen", "val_unseen", "test_seen", "test_unseen")
ROLE_SPLIT = {"train": "train", "val_seen": "val", "val_unseen": "val", "test_seen": "test", "test_unseen": "test"}
FIELDS = ("track_id", "work_id", "path", "duration_s", "content_hash")


def _hold_out(works: list[list[dict[str, Any]]], share: float, rng: np.random.Generator) -> list[dict[str, Any]]:
    """A seeded `share` of all performances of `works`, never a work's last remaining one."""
    total = sum(len(w) for w in works)
    want = math.ceil(share * total) if share > 0 else 0
    spare = [t for w in works for t in sorted(w, key=lambda t: t["track_id"])[1:]]  # each work keeps its first
    order = rng.permutation(len(spare))
    taken = [spare[i] for i in order[:want]]
    ids = {t["track_id"] for t in taken}
    for work in works:
        work[:] = [t for t in work if t["track_id"] not in ids]
    return taken


def assign_roles(tracks: list[dict[str, Any]], cfg: WorksSplitConfig) -> dict[str, list[dict[str, Any]]]:
    """Deterministic (by seed) role of every performance."""
    rng = np.random.default_rng(cfg.seed)
    groups = [sorted(g, key=lambda t: t["track_id"]) for g in group_works(tracks)]
    eligible = [g for g in groups if len(g) >= cfg.min_performances]
    if len(eligible) < 2:
        raise NotReadyError(f"works split: only {len(eligible)} work(s) have >= {cfg.min_performances} performances; "
                            "need at least 2 to evaluate work identification")
    order = [eligible[i] for i in rng.permutation(len(eligible))]
    n_test = max(1, round(cfg.test_unseen_works * len(order))) if cfg.test_unseen_works > 0 else 0
    n_val = round(cfg.val_unseen_works * len(order)) if cfg.val_unseen_works > 0 else 0
    if n_val == 0 and cfg.val_unseen_works > 0 and len(order) - n_test > 2:
        n_val = 1
    roles: dict[str, list[dict[str, Any]]] = {role: [] for role in ROLES}
    for group in order[:n_test]:
        roles["test_unseen"].extend(group)
    for group in order[n_test : n_test + n_val]:
        roles["val_unseen"].extend(group)
    seen = [list(g) for g in order[n_test + n_val :]]
    roles["test_seen"] = _hold_out(seen, cfg.test_seen_performances, rng)
    roles["val_seen"] = _hold_out(seen, cfg.val_seen_performances, rng)
    for group in seen + [g for g in groups if len(g) < cfg.min_performances]:
        roles["train"].extend(group)
    if not roles["train"]:
        raise NotReadyError("works split: no performance left for training; lower the unseen-work shares")
    return {role: sorted(rows, key=lambda t: t["track_id"]) for role, rows in roles.items()}


def find_leaks(roles: dict[str, list[dict[str, Any]]]) -> list[str]:
    """What would let evaluation see training data: shared performances or audio, unseen works in train."""
    problems = []
    for key in ("track_id", "content_hash"):
        owners: dict[str, set[str]] = defaultdict(set)
        for role, rows in roles.items():
            for row in rows:
                owners[row[key]].add(role)
        problems += [f"{key} {value!r} appears in {', '.join(sorted(r))}" for value, r in sorted(owners.items()) if len(r) > 1]
    train_works = {t["work_id"] for t in roles.get("train", [])}
    for role in ("val_unseen", "test_unseen"):
        problems += [f"work {w!r} of {role} has performances in train" for w in
                     sorted({t["work_id"] for t in roles.get(role, [])} & train_works)]
    for role in ("val_seen", "test_seen"):
        problems += [f"work {w!r} of {role} has no performance in train" for w in
                     sorted({t["work_id"] for t in roles.get(role, [])} - train_works)]
    return problems


def check_no_leakage(roles: dict[str, list[dict[str, Any]]]) -> None:
    raise_leaks(find_leaks(roles), "works split leakage")


def split_catalog(catalog_path: str | Path, out_dir: str | Path, cfg: WorksSplitConfig) -> dict[str, Any]:
    """Write train/val/test.jsonl (each row with its role) + summary.json; return the summary."""
    catalog = read_json(catalog_path)
    tracks = [{k: t[k] for k in FIELDS} for t in catalog["tracks"]]
    roles = assign_roles(tracks, cfg)
    check_no_leakage(roles)
    rows = {split: [] for split in SPLIT_FILES}
    for role, members in roles.items():
        rows[ROLE_SPLIT[role]].extend({**t, "role": role} for t in members)
    summary = {
        "performances": {role: len(members) for role, members in roles.items()},
        "works": {role: len({t["work_id"] for t in members}) for role, members in roles.items()},
        "config": cfg.model_dump(), "leakage": {"ok": True, "problems": []},
    }
    with atomic_dir(out_dir) as staging:
        for split, members in rows.items():
            write_jsonl(staging / f"{split}.jsonl", sorted(members, key=lambda t: t["track_id"]))
        write_json(staging / "summary.json", summary)
    return summary


def load_roles(split_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    split_dir = Path(split_dir)
    roles: dict[str, list[dict[str, Any]]] = {role: [] for role in ROLES}
    for split in SPLIT_FILES:
        path = split_dir / f"{split}.jsonl"
        if not path.is_file():
            raise NotReadyError(f"{path} not found: run `dvc repro works-split` first")
        for row in read_jsonl(path):
            roles[row["role"]].append(row)
    return roles


def role_counts(roles: dict[str, list[dict[str, Any]]]) -> dict[str, Counter]:
    return {role: Counter(t["work_id"] for t in members) for role, members in roles.items()}
