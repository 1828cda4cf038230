"""Open-catalog sources in their real layouts (built here, tiny): FMA zip + tracks.csv, MTG-Jamendo folder + .tsv."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pytest
import soundfile as sf

from conftest import tone
from musicid.config import IngestConfig, PrepareConfig
from musicid.data.archive import verify_archive
from musicid.data.ingest import scan_source
from musicid.data.splits import assign_splits
from musicid.errors import ArchiveError, ConfigError

FMA_TRACKS = [(2, "Hip-Hop", "training"), (5, "Hip-Hop", "training"), (10, "Pop", "validation"),
              (140, "Folk", "test"), (1039, "Rock", "training"), (1040, "Rock", "test")]


def _mp3(seconds: float, seed: int) -> bytes:
    path = Path(f"/tmp/musicid-test-{seed}.mp3")
    sf.write(path, tone(seconds, 22050, 110.0 * (1 + seed % 5), seed), 22050, format="MP3")
    data = path.read_bytes()
    path.unlink()
    return data


def _fma(tmp_path: Path) -> tuple[Path, Path]:
    """fma_small.zip (fma_small/<3 digits>/<6 digits>.mp3 + README + checksums) and fma_metadata/tracks.csv."""
    archive = tmp_path / "fma_small.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fma_small/README.txt", "This .zip file is part of the FMA dataset.\n")
        zf.writestr("fma_small/checksums", "")
        for track_id, _, _ in FMA_TRACKS:
            stem = f"{track_id:06d}"
            zf.writestr(f"fma_small/{stem[:3]}/{stem}.mp3", _mp3(4.0, track_id))
    meta = tmp_path / "fma_metadata" / "tracks.csv"
    meta.parent.mkdir()
    with meta.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "album", "artist", "set", "set", "track", "track"])
        writer.writerow(["", "title", "name", "split", "subset", "genre_top", "title"])
        writer.writerow(["track_id", "", "", "", "", "", ""])
        for track_id, genre, split in FMA_TRACKS:
            writer.writerow([track_id, "Album", f"Artist {track_id}", split, "small", genre, f"Song {track_id}"])
    return archive, meta


def test_fma_zip_with_tracks_csv(tmp_path: Path) -> None:
    archive, meta = _fma(tmp_path)
    scan = scan_source(archive, IngestConfig(source_type="fma", metadata=str(meta)), workers=1, progress=False)
    assert not scan.quarantined and scan.ignored == ["fma_small/README.txt", "fma_small/checksums"]
    by_id = {t["track_id"]: t for t in scan.tracks}
    assert set(by_id) == {f"fma{t:06d}" for t, _, _ in FMA_TRACKS}
    song = by_id["fma001039"]
    assert song["source_path"] == "fma_small/001/001039.mp3" and song["work_id"] == "fma001039"
    assert (song["style"], song["title"], song["artist"], song["source_split"]) == ("Rock", "Song 1039", "Artist 1039", "train")

    splits = assign_splits(scan.tracks, PrepareConfig(split_by="source"))
    assert {t["track_id"] for t in splits["val"]} == {"fma000010"}
    assert {t["track_id"] for t in splits["test"]} == {"fma000140", "fma001040"}
    assert len(splits["train"]) == 3
    by_work = assign_splits(scan.tracks, PrepareConfig())  # default: split by work, seeded
    assert sum(len(v) for v in by_work.values()) == 6


def test_fma_archive_still_downloading_or_truncated(tmp_path: Path) -> None:
    archive, _ = _fma(tmp_path)
    whole = archive.read_bytes()
    cut = tmp_path / "fma_small_cut.zip"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ArchiveError) as error:
        verify_archive(cut)
    message = str(error.value)
    assert "archive_not_complete" in message and f"{len(whole) // 2} bytes on disk" in message and "needs bytes up to" in message
    partial = tmp_path / "fma_small.zip.part"
    partial.write_bytes(whole[:1000])
    with pytest.raises(ArchiveError, match=r"still downloading \(1000 bytes so far\)"):
        verify_archive(partial)


def test_fma_without_its_metadata_names_the_key(tmp_path: Path) -> None:
    archive, _ = _fma(tmp_path)
    with pytest.raises(ConfigError, match="ingest.metadata: nope/tracks.csv not found .*fma_metadata/tracks.csv"):
        scan_source(archive, IngestConfig(source_type="fma", metadata="nope/tracks.csv"), workers=1, progress=False)


def test_mtg_jamendo_folder_with_tsv(tmp_path: Path) -> None:
    root = tmp_path / "mtg-jamendo" / "audio"
    rows = [("track_0000214", "artist_000014", "album_000031", "14/214.mp3", "5.0", ["genre---rock", "mood/theme---happy"]),
            ("track_0001000", "artist_000020", "album_000040", "00/1000.mp3", "5.0", ["instrument---piano", "genre---classical"]),
            ("track_0001101", "artist_000021", "album_000041", "01/1101.mp3", "5.0", [])]
    for i, (_, _, _, rel, _, _) in enumerate(rows):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_mp3(3.0, 20 + i))
    tsv = tmp_path / "mtg-jamendo" / "autotagging.tsv"
    tsv.write_text("TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
                   + "".join("\t".join([*r[:5], *r[5]]) + "\n" for r in rows))
    scan = scan_source(root, IngestConfig(source_type="mtg_jamendo", metadata=str(tsv)), workers=1, progress=False)
    by_id = {t["track_id"]: t for t in scan.tracks}
    assert set(by_id) == {"track_0000214", "track_0001000", "track_0001101"}
    assert by_id["track_0000214"]["style"] == "rock" and by_id["track_0001000"]["style"] == "classical"
    assert by_id["track_0001000"]["artist"] == "artist_000020" and "source_split" not in by_id["track_0001000"]
    # an official split file names its split
    split_file = tsv.with_name("autotagging-test.tsv")
    split_file.write_text(tsv.read_text())
    scan = scan_source(root, IngestConfig(source_type="mtg_jamendo", metadata=str(split_file)), workers=1, progress=False)
    assert {t["source_split"] for t in scan.tracks} == {"test"}


def test_mtg_jamendo_rejects_a_foreign_tsv(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "a.wav", tone(2.0), 22050)
    (tmp_path / "x.tsv").write_text("id\tpath\n1\ta.wav\n")
    with pytest.raises(ConfigError, match="not an MTG-Jamendo .tsv"):
        scan_source(tmp_path / "audio", IngestConfig(source_type="mtg_jamendo", metadata=str(tmp_path / "x.tsv")),
                    workers=1, progress=False)
