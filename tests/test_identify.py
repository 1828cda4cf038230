"""Identification: offset-consistent voting finds exact excerpts at the right offset; CLI contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from musicid.audio import to_model_rate
from musicid.cli import main
from musicid.config import IdentifyConfig, IndexConfig, SynthConfig
from musicid.data.synth import render_track_preview
from musicid.families.fingerprint.identifier import Identifier
from musicid.families.fingerprint.voting import vote
from musicid.index import IndexSignatureError, build_index, index_refs_from_folder, load_index
from musicid.families.fingerprint.model import Fingerprinter, FingerprinterSpec
from musicid.families.fingerprint.io import load_model, save_model

# An untrained network: one conv block keeps enough of the log-mel structure to tell segments
# apart (deeper random stacks collapse every input to nearly the same direction). With this spec,
# exact 3 s excerpts at aligned and non-aligned starts were identified at the right offset for 40
# of 40 seeds (4 tracks × 7 starts each).
RANDOM_SPEC = FingerprinterSpec(channels=(16,), hidden=128, embedding_dim=32, n_mels=64)
N_TRACKS = 4
SR = 8000


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("identify")
    synth = SynthConfig(min_duration_s=8, max_duration_s=10)
    tracks = {}
    for work in range(N_TRACKS):
        audio, sample_rate = render_track_preview(work, 0, synth)
        name = f"track{work}.wav"
        (root / "refs").mkdir(exist_ok=True)
        sf.write(root / "refs" / name, audio, sample_rate)
        tracks[name] = (audio, sample_rate)
    torch.manual_seed(0)
    save_model(Fingerprinter(RANDOM_SPEC), root / "model")
    loaded = load_model(root / "model", "cpu")
    build_index(index_refs_from_folder(root / "refs"), loaded, root / "index", IndexConfig(), progress=False)
    identifier = Identifier(loaded, load_index(root / "index", loaded.signature), IdentifyConfig())
    return {"root": root, "tracks": tracks, "loaded": loaded, "identifier": identifier}


def _excerpt(world: dict, name: str, start_s: float, length_s: float) -> np.ndarray:
    audio, sample_rate = world["tracks"][name]
    signal = to_model_rate(audio, sample_rate, SR)
    return signal[int(round(start_s * SR)) : int(round((start_s + length_s) * SR))]


@pytest.mark.parametrize("name", ["track1.wav", "track2.wav"])
@pytest.mark.parametrize("start_s", [2.0, 3.3], ids=["aligned", "non_aligned"])
def test_exact_excerpt_top1_at_offset(world: dict, name: str, start_s: float) -> None:
    matches = world["identifier"].identify_signal(_excerpt(world, name, start_s, 3.0))
    assert matches[0]["ref"] == name
    assert abs(matches[0]["offset_s"] - start_s) <= 0.5
    assert len(matches) <= IdentifyConfig().top
    assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)
    assert 0 < matches[0]["score"] <= 1.0 + 1e-5


def test_identify_path_from_a_file_at_its_own_rate(world: dict, tmp_path: Path) -> None:
    audio, sample_rate = world["tracks"]["track3.wav"]
    clip = tmp_path / "clip.flac"
    sf.write(clip, audio[int(4.6 * sample_rate) : int(7.6 * sample_rate)], sample_rate)
    result = world["identifier"].identify_path(str(clip))
    assert result["query"] == str(clip)
    assert result["matches"][0]["ref"] == "track3.wav"
    assert abs(result["matches"][0]["offset_s"] - 4.6) <= 0.5


def test_query_shorter_than_a_segment_and_bad_files(world: dict, tmp_path: Path) -> None:
    identifier = world["identifier"]
    matches = identifier.identify_signal(_excerpt(world, "track0.wav", 1.0, 0.4))
    assert 1 <= len(matches) <= IdentifyConfig().top
    assert all(m["offset_s"] >= 0 for m in matches)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF....WAVEfmt garbage")
    result = identifier.identify_path(corrupt)
    assert result["query"] == str(corrupt) and result["matches"] == [] and result["error"].startswith("undecodable: ")
    assert identifier.identify_path(tmp_path / "missing.wav")["error"].startswith("missing")


def test_identifier_refuses_index_of_another_model(world: dict, tmp_path: Path) -> None:
    torch.manual_seed(12345)
    save_model(Fingerprinter(RANDOM_SPEC), tmp_path / "other")
    other = load_model(tmp_path / "other", "cpu")
    with pytest.raises(IndexSignatureError) as info:
        Identifier(other, world["identifier"].index, IdentifyConfig())
    assert other.signature in str(info.value) and world["loaded"].signature in str(info.value)


def test_vote_offset_consistency_and_normalisation() -> None:
    # 4 query segments every 0.25 s; track 1 agrees on alignment 10.0 s, track 0 hits are scattered.
    starts = np.array([0.0, 0.25, 0.5, 0.75])
    tracks = np.array([[1, 0, -1], [1, 0, -1], [0, 1, -1], [1, 0, -1]])
    offsets = np.array([[10.0, 3.0, np.nan], [10.2, 7.0, np.nan], [1.0, 10.5, np.nan], [10.75, 0.5, np.nan]])
    scores = np.array([[1.0, 0.99, -np.inf], [0.9, 0.95, -np.inf], [0.99, 1.0, -np.inf], [1.0, 0.98, -np.inf]])
    ranked = vote(scores, tracks, offsets, starts, bin_s=0.5, top=5)
    assert [r[0] for r in ranked] == [1, 0]
    track, score, offset = ranked[0]
    assert score == pytest.approx((1.0 + 0.9 + 1.0 + 1.0) / 4)
    assert offset == pytest.approx(10.0)  # median of 10.0, 9.95, 10.0, 10.0
    assert ranked[1][1] < 0.5  # scattered hits never line up: at most ~one segment's worth
    # Same perfect evidence, longer query: same score (normalised per query segment).
    long = vote(np.ones((8, 1)), np.ones((8, 1), dtype=int), (np.arange(8) * 0.25 + 10.0)[:, None],
                np.arange(8) * 0.25, 0.5, 5)
    assert long == [(1, pytest.approx(1.0), pytest.approx(10.0))]
    assert vote(np.full((2, 2), -np.inf), np.full((2, 2), -1), np.full((2, 2), np.nan), np.zeros(2), 0.5, 5) == []


def test_cli_identify_json_good_and_corrupt(world: dict, tmp_path: Path, monkeypatch) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, _excerpt(world, "track2.wav", 2.0, 3.0), SR)
    short = tmp_path / "short.wav"
    sf.write(short, _excerpt(world, "track2.wav", 2.0, 0.5), SR)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(good.read_bytes()[:60] + bytes(200))
    monkeypatch.chdir(tmp_path)  # relative query paths are echoed as given
    args = ["--index", str(world["root"] / "index"), "--model", str(world["root"] / "model"),
            "--params", str(tmp_path / "absent.yaml")]
    result = CliRunner().invoke(main, ["identify", "good.wav", "corrupt.wav", "short.wav", "--json", *args])
    assert result.exit_code == 1, result.output  # one query could not be decoded
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["query"] for line in lines] == ["good.wav", "corrupt.wav", "short.wav"]
    assert lines[0]["matches"][0]["ref"] == "track2.wav" and abs(lines[0]["matches"][0]["offset_s"] - 2.0) <= 0.5
    assert set(lines[0]["matches"][0]) == {"ref", "score", "offset_s"} and "error" not in lines[0]
    assert lines[1]["matches"] == [] and lines[1]["error"]
    assert lines[2]["matches"] and "error" not in lines[2]

    result = CliRunner().invoke(main, ["identify", "good.wav", "--top", "2", *args])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "good.wav" and "track2.wav" in result.stdout.splitlines()[1]
    assert len(result.stdout.splitlines()) == 3

    result = CliRunner().invoke(main, ["identify", "good.wav", "--index", str(tmp_path / "nowhere"),
                                       "--model", str(world["root"] / "model")])
    assert result.exit_code == 2 and "index not found" in result.output


def test_warps_find_a_faster_copy_and_thresholds_decide_matched(world: dict, tmp_path: Path) -> None:
    from musicid.families.fingerprint.identifier import resample_by

    # the excerpt played 5.95 % faster (a semitone up, like a tape); the warped view undoes it
    fast = resample_by(_excerpt(world, "track2.wav", 2.0, 4.0), SR, 1 / 1.0595)
    assert abs(len(fast) - 4.0 * SR / 1.0595) <= 2
    plain = world["identifier"]
    warped = Identifier(world["loaded"], plain.index, IdentifyConfig(warps=[1.0, 1.0595]))
    views = warped.query_embeddings(fast)
    assert len(views.views) == 2 and views.segments == len(plain.query_embeddings(fast).views[0][0])
    assert len(views.views[1][0]) > views.segments  # the slowed view is longer: more segments
    # each reference keeps its best view: the merged answer is the best of the views answered alone
    from musicid.families.fingerprint.identifier import Query

    alone = [warped.match(Query([view]), top=N_TRACKS) for view in views.views]
    best = {}
    for answer in alone:
        for m in answer:
            best[m["ref"]] = max(best.get(m["ref"], -1.0), m["score"])
    merged = warped.match(views, top=N_TRACKS)
    assert {m["ref"]: m["score"] for m in merged} == best
    assert merged[0]["ref"] == "track2.wav" and abs(merged[0]["offset_s"] - 2.0) <= 0.5
    # no threshold known: no "matched"; a calibrated curve or a flat min_score decides it
    assert "matched" not in merged[0]
    clip = tmp_path / "clip.wav"
    sf.write(clip, _excerpt(world, "track1.wav", 1.0, 3.0), SR)
    curve = {"segments": [1.0, 9.0], "min_scores": [0.99, 0.5]}
    calibrated = Identifier(world["loaded"], plain.index, IdentifyConfig(), open_set=curve).identify_path(clip)
    queries = calibrated["matches"]
    assert calibrated["min_score"] == 0.5 and calibrated["matched"] is (queries[0]["score"] >= 0.5)
    strict = Identifier(world["loaded"], plain.index, IdentifyConfig(min_score=1.5), open_set=curve).identify_path(clip)
    assert strict["min_score"] == 1.5 and strict["matched"] is False and not any(m["matched"] for m in strict["matches"])
    with pytest.raises(ValueError, match="warps must start with 1.0"):
        IdentifyConfig(warps=[1.05])


def test_index_doctor_reports_hubs_and_the_open_set_threshold(world: dict, tmp_path: Path) -> None:
    root, queries, truth = world["root"], tmp_path / "queries", {}
    queries.mkdir()
    for i, name in enumerate(sorted(world["tracks"])):
        for length in (1, 3):
            clip = f"q{i}_{length}s.wav"
            sf.write(queries / clip, _excerpt(world, name, 1.0, length), SR)
            truth[clip] = {"ref": name, "start_s": 1.0, "condition": "noise", "length_s": length}
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    args = ["index", "doctor", str(root / "index"), "--queries", str(queries), "--truth", str(tmp_path / "truth.json"),
            "--model", str(root / "model"), "--out", str(tmp_path / "doctor.json")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "doctor.json").read_text())
    assert report["main_queries"] == len(truth) == len(report["rows"])
    assert report["wrong_main"] == sum(not r["top1"] for r in report["rows"])
    assert report["open_set"]["negatives"] == len(truth) and set(report["open_set"]["by_length"]) == {"1s", "3s"}
    assert all(r["impostor_score"] is not None and r["segments"] >= 1 for r in report["rows"])
    assert "main-condition queries" in result.output and "open set (FPR ≤ 0.01)" in result.output
    # a truth file naming none of the clips in the folder: one line, exit 2
    (tmp_path / "other.json").write_text(json.dumps({"absent.wav": truth["q0_1s.wav"]}))
    refused = CliRunner().invoke(main, args[:5] + ["--truth", str(tmp_path / "other.json"), "--model", str(root / "model")])
    assert refused.exit_code == 2 and "none of the 1 queries" in refused.output
