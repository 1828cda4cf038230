from __future__ import annotations

import json
from pathlib import Path

from conftest import BAD_FILES

from musicid.config import IngestConfig
from musicid.data.ingest import ingest, scan_folder
from musicid.data.inspect import summarize

CFG = IngestConfig(query_duration_s=5.0)


def test_bad_files_are_quarantined_with_reason_and_the_rest_goes_on(audio_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ingested"
    result = ingest(audio_folder, out, CFG, workers=2, progress=False)

    reasons = {q["source_path"]: q["reason"] for q in result.quarantined}
    assert reasons == BAD_FILES
    assert sorted(t["track_id"] for t in result.tracks) == [f"w{w}_v{v}" for w in range(3) for v in range(2)]

    catalog = json.loads((out / "catalog.json").read_text())["tracks"]
    quarantine = json.loads((out / "quarantine.json").read_text())["files"]
    assert len(catalog) == 6 and len(quarantine) == len(BAD_FILES)
    # nothing is lost: every good file is in audio/, every bad one kept under quarantine/
    for track in catalog:
        assert (out / track["path"]).read_bytes() == (audio_folder / track["source_path"]).read_bytes()
    for entry in quarantine:
        assert (out / entry["path"]).is_file()
        assert entry["reason"] and "detail" in entry
    # the user's folder is untouched
    assert (audio_folder / "bad" / "empty.wav").exists()


def test_catalog_carries_metadata_and_measurements(audio_folder: Path) -> None:
    result = scan_folder(audio_folder, CFG, workers=1, progress=False)
    track = next(t for t in result.tracks if t["track_id"] == "w2_v1")
    assert track["work_id"] == "w2" and track["version"] == 1 and track["title"] == "Song 2"
    assert track["format"] == "FLAC" and track["sample_rate"] == 22050 and track["channels"] == 1
    assert abs(track["duration_s"] - 6.0) < 1e-3
    assert -40 < track["loudness_lufs"] < 0 and track["peak_dbfs"] <= 0
    assert track["silent_fraction"] < 0.5
    assert len(track["content_hash"]) == 64 and len(track["sha256"]) == 64


def test_folder_without_metadata_uses_paths(tmp_path: Path) -> None:
    from conftest import write_audio

    write_audio(tmp_path / "a" / "song.wav", 2.0)
    write_audio(tmp_path / "a" / "song.flac", 2.0, seed=1)
    result = scan_folder(tmp_path, CFG, workers=1, progress=False)
    assert sorted(t["track_id"] for t in result.tracks) == ["a/song.flac", "a/song.wav"]
    assert all(t["work_id"] == t["track_id"] for t in result.tracks)


def test_inspect_summary_and_readiness(audio_folder: Path) -> None:
    report = summarize(scan_folder(audio_folder, CFG, workers=1, progress=False), query_duration_s=5.0)
    assert report["files"] == {"audio": 12, "decodable": 6, "quarantined": 6, "non_audio": 2}
    assert report["works"] == 3
    assert report["readiness"]["ready_for_smoke"] is True
    assert report["readiness"]["files_long_enough"] == 4  # durations 4,4,5,5,6,6
    assert sum(report["duration_s"]["histogram"].values()) == 6

    strict = summarize(scan_folder(audio_folder, CFG, workers=1, progress=False), query_duration_s=5.5)
    assert strict["readiness"]["ready_for_smoke"] is True
    too_long = summarize(scan_folder(audio_folder, CFG, workers=1, progress=False), query_duration_s=7.0)
    assert too_long["readiness"]["ready_for_smoke"] is False
    assert "at least 7 s long" in too_long["readiness"]["reasons"][0]


def test_data_commands_take_an_optional_source_and_compare_candidates(audio_folder: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from musicid.cli import main

    runner = CliRunner()
    plain = json.loads(runner.invoke(main, ["data", "inspect", str(audio_folder), "--query-duration", "5", "--json"]).stdout)
    typed = json.loads(runner.invoke(main, ["data", "inspect", "folder", str(audio_folder), "--query-duration", "5",
                                            "--json"]).stdout)
    assert plain == typed and typed["files"]["decodable"] == 6
    # six files of 4-6 s, four of them >= 5 s: at the default eval ratio 0.2 one is held out (one 5 s query)
    assert typed["recommended"] == {"eval_tracks": 1, "train_tracks": 5, "test_queries": 1}
    ready = runner.invoke(main, ["data", "check-ready", "folder", str(audio_folder), "--query-duration", "5",
                                 "--eval-ratio", "0.5"])
    assert ready.exit_code == 0 and "2 eval tracks" in ready.stdout
    not_ready = runner.invoke(main, ["data", "check-ready", str(audio_folder), "--query-duration", "30"])
    assert not_ready.exit_code == 1 and "at least 30 s long" in not_ready.stderr
    bad = runner.invoke(main, ["data", "inspect", "spotify", str(audio_folder)])
    assert bad.exit_code == 2 and "SOURCE one of auto, folder, archive" in bad.stderr

    (tmp_path / "small").mkdir()
    import shutil

    shutil.copy(audio_folder / "w0" / "w0_v0.wav", tmp_path / "small" / "one.wav")
    table = runner.invoke(main, ["data", "inspect-batch", f"full={audio_folder}", f"small={tmp_path / 'small'}",
                                 "--query-duration", "5"])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[1].split()[:3] == ["full", "6", "6"] and lines[1].endswith("true")
    assert lines[2].split()[:2] == ["small", "1"] and lines[2].endswith("false")


def test_data_prepare_writes_valid_manifests_with_overlapping_queries(audio_folder: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from musicid.cli import main

    out = tmp_path / "prepared"
    args = ["data", "prepare", "folder", str(audio_folder), "--output-root", str(out), "--eval-ratio", "0.3",
            "--query-duration", "2", "--query-stride", "1", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["quarantined"] == len(BAD_FILES) and summary["tracks"]["test"] == 2  # one work of two versions
    queries = [json.loads(line) for line in (out / "manifests/queries.jsonl").read_text().splitlines()]
    test = {json.loads(line)["track_id"]: json.loads(line) for line in (out / "manifests/test.jsonl").read_text().splitlines()}
    for track_id, track in test.items():
        starts = sorted(q["start_s"] for q in queries if q["track_id"] == track_id)
        assert starts == [float(s) for s in range(int(track["duration_s"]) - 1)]  # every 1 s: overlapping 2 s queries
    validated = CliRunner().invoke(main, ["data", "validate", str(out / "manifests")])
    assert validated.exit_code == 0 and validated.stdout.startswith("ok")
