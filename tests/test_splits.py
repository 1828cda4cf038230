from __future__ import annotations

import json
from pathlib import Path

import pytest

from musicid.config import PrepareConfig
from musicid.data.splits import assign_splits, check_no_leakage, plan_queries, prepare, validate_manifests
from musicid.errors import LeakageError, NotReadyError


def _tracks(n_works: int, versions: int = 3) -> list[dict]:
    return [
        {
            "track_id": f"w{w:03d}_v{v}",
            "work_id": f"w{w:03d}",
            "path": f"audio/w{w:03d}_v{v}.flac",
            "duration_s": 30.0 + w,
            "content_hash": f"hash-{w}-{v}",
        }
        for w in range(n_works)
        for v in range(versions)
    ]


def _catalog(tmp_path: Path, tracks: list[dict]) -> Path:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"tracks": tracks}))
    return path


def test_split_is_by_work_deterministic_and_leak_free() -> None:
    cfg = PrepareConfig(seed=7, val_fraction=0.1, test_fraction=0.2)
    first, second = assign_splits(_tracks(40), cfg), assign_splits(_tracks(40), cfg)
    assert first == second
    works = {name: {t["work_id"] for t in rows} for name, rows in first.items()}
    assert len(works["test"]) == 8 and len(works["val"]) == 4 and len(works["train"]) == 28
    assert not (works["train"] & works["test"]) and not (works["train"] & works["val"]) and not (works["val"] & works["test"])
    check_no_leakage(first)
    other = assign_splits(_tracks(40), PrepareConfig(seed=8))
    assert {t["work_id"] for t in other["test"]} != works["test"]


def test_identical_audio_under_different_works_stays_in_one_split() -> None:
    tracks = _tracks(20)
    tracks[0]["content_hash"] = tracks[-1]["content_hash"]  # same audio filed under two works
    for seed in range(10):
        splits = assign_splits(tracks, PrepareConfig(seed=seed))
        check_no_leakage(splits)
        owner = {t["track_id"]: name for name, rows in splits.items() for t in rows}
        assert owner[tracks[0]["track_id"]] == owner[tracks[-1]["track_id"]]


def test_leakage_check_fails_loudly() -> None:
    splits = {"train": _tracks(2)[:2], "val": [], "test": _tracks(2)[2:]}  # w000_v2 lands in test
    with pytest.raises(LeakageError, match="work_id 'w000' appears in test, train"):
        check_no_leakage(splits)


def test_too_few_works_is_a_clear_error() -> None:
    with pytest.raises(NotReadyError, match="at least 2 distinct works"):
        assign_splits(_tracks(1), PrepareConfig())


def test_queries_fit_inside_held_out_tracks() -> None:
    cfg = PrepareConfig(query_lengths_s=[1, 5, 40], queries_per_track=3)
    tracks = _tracks(3)
    queries = plan_queries(tracks, cfg)
    by_id = {t["track_id"]: t for t in tracks}
    assert len(queries) == 9 * 2 * 3  # 9 tracks of 30-32 s: the 40 s length fits none of them
    assert plan_queries(tracks, cfg) == queries
    for query in queries:
        assert 0 <= query["start_s"] and query["start_s"] + query["duration_s"] <= by_id[query["track_id"]]["duration_s"]


def test_prepare_writes_manifests_that_validate(tmp_path: Path) -> None:
    summary = prepare(_catalog(tmp_path, _tracks(10)), tmp_path / "manifests", PrepareConfig())
    assert summary["tracks"]["refs"] == 30 and summary["queries"] > 0
    report = validate_manifests(tmp_path / "manifests")
    assert report["ok"], report["problems"]
    assert report["counts"]["refs"] == 30


def test_validate_reports_tampered_manifests(tmp_path: Path) -> None:
    prepare(_catalog(tmp_path, _tracks(10)), tmp_path / "m", PrepareConfig())
    train = (tmp_path / "m" / "train.jsonl").read_text().splitlines()
    test = (tmp_path / "m" / "test.jsonl").read_text()
    (tmp_path / "m" / "test.jsonl").write_text(test + train[0] + "\n")  # move a train track into test too
    report = validate_manifests(tmp_path / "m")
    assert not report["ok"]
    assert any("track_id" in p and "test, train" in p for p in report["problems"])

    (tmp_path / "m" / "queries.jsonl").unlink()
    assert validate_manifests(tmp_path / "m")["problems"] == ["missing manifest file(s): queries.jsonl"]
