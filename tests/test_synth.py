"""The synthetic music archive: reproducible, well-formed, and actually music."""

from __future__ import annotations

import csv
import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicid.config import SynthConfig
from musicid.data import synth
from musicid.data.synth import compose


def tiny(**overrides: object) -> SynthConfig:
    """2 works x 2 versions of 3-5 s: every rate/channel layout and all three formats appear."""
    base: dict[str, object] = {"seed": 7, "n_works": 2, "versions_per_work": 2}
    return SynthConfig(**{**base, "min_duration_s": 3.0, "max_duration_s": 5.0, **overrides})


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def decode(data: bytes) -> tuple[np.ndarray, int]:
    return sf.read(io.BytesIO(data), dtype="float32", always_2d=True)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    path = tmp_path_factory.mktemp("synth") / "synthetic.tar.gz"
    rows = synth.build_archive(tiny(), path, progress=False, workers=1)
    return path, rows


# --- reproducibility --------------------------------------------------------------------------


def test_same_seed_gives_identical_archive_bytes_even_in_parallel(archive, tmp_path):
    path, rows = archive
    again = tmp_path / "again.tar.gz"
    rows_again = synth.build_archive(tiny(), again, progress=False, workers=2)
    assert rows_again == rows
    assert again.read_bytes() == path.read_bytes()


def test_different_seed_gives_different_audio():
    a, sr_a = synth.render_track_preview(0, 0, tiny(seed=7))
    b, sr_b = synth.render_track_preview(0, 0, tiny(seed=8))
    assert not (a.shape == b.shape and np.allclose(a, b))


def test_adding_works_keeps_earlier_tracks(archive, tmp_path):
    path, rows = archive
    bigger = tmp_path / "bigger.tar.gz"
    bigger_rows = synth.build_archive(tiny(n_works=3), bigger, progress=False, workers=1)
    small, large = members(path), members(bigger)
    for name, data in small.items():
        if name != "metadata.csv":
            assert large[name] == data, name
    assert [r for r in bigger_rows if r["work_id"] != "w0002"] == rows


def test_ogg_encoding_is_byte_reproducible_and_valid():
    t = np.arange(22050) / 22050
    audio = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None]
    first, second = (synth.encode_audio(audio, 22050, "ogg") for _ in range(2))
    assert first == second  # libsndfile picks a random stream serial; encode_audio fixes it
    decoded, sr = decode(first)  # page CRCs were recomputed, otherwise pages would be dropped
    assert sr == 22050 and len(decoded) == len(audio)


# --- archive layout ---------------------------------------------------------------------------


def test_archive_holds_exactly_metadata_and_audio(archive):
    path, rows = archive
    content = members(path)
    assert set(content) == {"metadata.csv"} | {r["file"] for r in rows}
    with tarfile.open(path, "r:gz") as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == sorted(i.name for i in infos)
    assert all(i.mtime == 0 and i.uid == 0 and i.gid == 0 for i in infos)
    for row in rows:
        audio, sr = decode(content[row["file"]])
        assert sr == row["sample_rate"] and audio.shape[1] == row["channels"]
        assert abs(len(audio) / sr - row["duration"]) < 0.01
        assert np.abs(audio).max() > 0.1


def test_metadata_csv_columns_and_values(archive):
    path, rows = archive
    text = members(path)["metadata.csv"].decode()
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0].split(",") == list(synth.METADATA_COLUMNS)
    assert len(parsed) == len(rows) == 4
    for row, written in zip(rows, parsed):
        assert {k: str(v) for k, v in row.items()} == written
        assert re.fullmatch(r"w\d{4}_v\d", row["track_id"])
        assert row["track_id"].startswith(row["work_id"]) and isinstance(row["version"], int)
        assert row["file"] == f"audio/{row['style']}/{row['track_id']}.{row['format']}"
        assert row["title"] and re.fullmatch(r"[A-G][#b]? (major|minor)", row["key"])
        assert -5 <= row["transpose"] <= 5 and row["tempo_bpm"] > 0


def test_durations_layouts_and_formats(archive):
    _, rows = archive
    cfg = tiny()
    assert all(cfg.min_duration_s - 0.01 <= r["duration"] <= cfg.max_duration_s + 0.01 for r in rows)
    assert {(r["sample_rate"], r["channels"]) for r in rows} == {(44100, 2), (22050, 1)}
    assert {r["format"] for r in rows} == {"flac", "ogg", "wav"}
    assert sum(r["sample_rate"] == 44100 for r in rows) == len(rows) // 2


# --- musical content --------------------------------------------------------------------------


def test_composition_is_diatonic_and_repeats_sections():
    work = synth.compose_work(3, synth.work_rng(7, 3))
    again = synth.compose_work(3, synth.work_rng(7, 3))
    assert work.parts == again.parts and work.structure == again.structure
    assert len(work.structure) > len(set(work.structure))  # e.g. the chorus comes back
    assert {"intro", "verse", "chorus", "outro"} <= set(work.structure)
    allowed = set(compose.SCALES[work.mode]) | ({11} if work.mode == "minor" else set())
    for part in work.parts.values():
        assert {t % 12 for c in part.chords for t in c.tones} <= allowed
        assert {n.pitch % 12 for n in part.melody} <= allowed
        assert part.drums and part.bass
    assert len({n.pitch for n in work.parts["chorus"].melody}) >= 3
    starts = [t for _, t in work.section_times()]
    assert starts == sorted(starts) and starts[0] == 0.0


def test_versions_share_the_form_but_sound_different():
    cfg = tiny(min_duration_s=40.0, max_duration_s=40.0)
    work = synth.compose_work(0, synth.work_rng(cfg.seed, 0))
    (a, _, meta_a), (b, _, meta_b) = (synth.render_track(0, v, cfg) for v in (0, 1))
    names_a = [s["name"] for s in meta_a["sections"]]
    names_b = [s["name"] for s in meta_b["sections"]]
    k = min(3, len(names_a), len(names_b))
    assert k >= 2 and names_a[:k] == names_b[:k] == list(work.structure[:k])
    # same bar positions at each version's own tempo
    beats_a = [s["start_s"] * meta_a["tempo_bpm"] / 60 for s in meta_a["sections"][:k]]
    beats_b = [s["start_s"] * meta_b["tempo_bpm"] / 60 for s in meta_b["sections"][:k]]
    assert np.allclose(beats_a, beats_b, atol=0.05)
    assert meta_a["transpose"] == 0 and meta_b["transpose"] != 0
    assert meta_a["tempo_bpm"] != meta_b["tempo_bpm"]
    assert meta_b["title"].startswith(work.title)
    assert a.shape != b.shape or not np.allclose(a, b)


@pytest.mark.parametrize("work_index,version_index", [(0, 0), (0, 1), (1, 0)])
def test_audio_sounds_like_music(work_index, version_index):
    librosa = pytest.importorskip("librosa")
    from scipy.signal import find_peaks

    cfg = tiny(min_duration_s=15.0, max_duration_s=15.0)
    audio, sr, meta = synth.render_track(work_index, version_index, cfg)
    assert audio.dtype == np.float32 and np.isfinite(audio).all()
    peak = float(np.abs(audio).max())
    assert 0.8 < peak <= 1.0  # normalised to about -1 dBFS, never clipping
    assert abs(float(audio[0].max())) < 1e-3  # faded in, no click
    mono = audio.mean(axis=1)
    assert np.sqrt(np.mean(mono**2)) > 0.02  # not silent
    # rhythm: plenty of note/drum onsets
    envelope = librosa.onset.onset_strength(y=mono, sr=sr)
    onsets, _ = find_peaks(envelope, height=envelope.mean() + envelope.std(), distance=3)
    assert len(onsets) >= 15
    # harmony: pitch classes follow the scale of the key the metadata claims (after transposing)
    chroma = librosa.feature.chroma_stft(y=mono, sr=sr, n_fft=8192, hop_length=2048, tuning=0.0).mean(axis=1)
    name, mode = meta["key"].split()
    tonic = compose.NOTE_NAMES.index(name)
    scores = []
    for root in range(12):
        template = np.zeros(12)
        template[[(root + step) % 12 for step in compose.SCALES[mode]]] = 1.0
        scores.append(np.corrcoef(template, chroma)[0, 1])
    assert scores[tonic] > 0.4 and scores[tonic] >= max(scores) - 0.1
