"""`musicid data compare`: planted overlaps between two datasets are found by each key; `data inspect`
counts performances per work."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from musicid.cli import main
from musicid.data.compare import compare_datasets, load_tracks, work_title
from musicid.data.inspect import performances_per_work


def _catalog(path: Path, tracks: list[dict]) -> Path:
    path.mkdir(parents=True)
    (path / "catalog.json").write_text(json.dumps({"source": "x", "tracks": tracks}))
    return path


def test_compare_finds_each_planted_overlap_and_only_those(tmp_path: Path) -> None:
    a = _catalog(tmp_path / "a", [
        {"track_id": "a1", "work_id": "wa", "title": "Quiet Sparrow", "content_hash": "h-shared"},
        {"track_id": "a2", "work_id": "wa", "title": "Quiet Sparrow (live)", "content_hash": "h-a2"},
        {"track_id": "same-id", "work_id": "wb", "title": "Other", "content_hash": "h-a3"},
        {"track_id": "a4", "work_id": "common", "title": "Nothing Alike", "content_hash": "h-a4"},
    ])
    manifests = tmp_path / "b"
    manifests.mkdir()
    rows = [
        {"track_id": "b1", "work_id": "wx", "title": "Unrelated", "content_hash": "h-shared"},  # same audio, renamed
        {"track_id": "b2", "work_id": "wy", "title": "quiet sparrow - acoustic", "content_hash": "h-b2"},  # same work title
        {"track_id": "same-id", "work_id": "wz", "title": "Different", "content_hash": "h-b3"},  # same track id
        {"track_id": "b4", "work_id": "common", "title": "Still Nothing", "content_hash": "h-b4"},  # same work id
    ]
    (manifests / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (manifests / "queries.jsonl").write_text(json.dumps({"query_id": "q", "track_id": "b1", "work_id": "wx"}) + "\n")
    report = compare_datasets(load_tracks(a), load_tracks(manifests))
    assert report["tracks"] == {"a": 4, "b": 4}  # the query plan row is not a performance
    assert [e["key"] for e in report["performances_by_content_hash"]["examples"]] == ["h-shared"]
    assert report["performances_by_content_hash"]["examples"][0] == {"key": "h-shared", "a": ["a1"], "b": ["b1"]}
    assert [e["key"] for e in report["performances_by_track_id"]["examples"]] == ["same-id"]
    assert [e["key"] for e in report["works_by_work_id"]["examples"]] == ["common"]
    assert [e["key"] for e in report["works_by_title"]["examples"]] == ["quiet sparrow"]
    assert report["works_by_title"]["examples"][0]["a"] == ["a1", "a2"] and report["overlap"]
    assert work_title("Song [Remastered 2011]") == work_title("song - live at Wembley") == "song"

    runner = CliRunner()
    shown = runner.invoke(main, ["data", "compare", str(a), str(manifests), "--fail-on-overlap"])
    assert shown.exit_code == 1 and "  same audio          1\n" in shown.output and "same work title     1" in shown.output
    clean = _catalog(tmp_path / "c", [{"track_id": "c1", "work_id": "wc", "title": "Fresh", "content_hash": "h-c"}])
    assert runner.invoke(main, ["data", "compare", str(a), str(clean), "--fail-on-overlap"]).exit_code == 0
    bad = runner.invoke(main, ["data", "compare", str(a), str(tmp_path)])
    assert bad.exit_code == 2 and "no catalog.json and no *.jsonl manifests" in bad.output


def test_performances_per_work_counts_works_by_their_number_of_performances() -> None:
    tracks = [{"track_id": f"t{i}", "work_id": w} for i, w in enumerate(["a", "a", "a", "b", "c", "c"])]
    assert performances_per_work(tracks) == {"1": 1, "2": 1, "3": 1}
