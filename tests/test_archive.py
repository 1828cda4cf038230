from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import write_audio

from musicid.config import IngestConfig
from musicid.data.archive import extract_archive, source_kind, verify_archive
from musicid.data.ingest import ingest
from musicid.errors import ArchiveError


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo], payloads: dict[str, bytes] | None = None) -> Path:
    payloads = payloads or {}
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            data = payloads.get(info.name)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _good_wav(tmp_path: Path) -> bytes:
    return write_audio(tmp_path / "src.wav", 2.0).read_bytes()


@pytest.mark.parametrize(
    "name, reason",
    [("../evil.wav", "'..'"), ("audio/../../evil.wav", "'..'"), ("/etc/evil.wav", "absolute"), ("..\\evil.wav", "'..'")],
)
def test_zip_slip_member_is_refused_by_name(tmp_path: Path, name: str, reason: str) -> None:
    archive = _zip(tmp_path / "slip.zip", {"ok.wav": _good_wav(tmp_path), name: b"x"})
    with pytest.raises(ArchiveError) as error:
        extract_archive(archive, tmp_path / "out")
    assert repr(name) in str(error.value) and reason in str(error.value)
    assert not (tmp_path / "evil.wav").exists() and not (tmp_path / "out").exists()


def test_tar_symlink_pointing_outside_is_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("audio/link.wav")
    link.type, link.linkname = tarfile.SYMTYPE, "../../outside.wav"
    archive = _tar(tmp_path / "links.tar.gz", [link])
    with pytest.raises(ArchiveError, match="'audio/link.wav'.*outside"):
        verify_archive(archive)


def test_tar_symlink_inside_archive_is_allowed(tmp_path: Path) -> None:
    data = _good_wav(tmp_path)
    real = tarfile.TarInfo("audio/real.wav")
    link = tarfile.TarInfo("audio/alias.wav")
    link.type, link.linkname = tarfile.SYMTYPE, "real.wav"
    archive = _tar(tmp_path / "ok.tar.gz", [real, link], {"audio/real.wav": data})
    assert verify_archive(archive) == 2


def test_truncated_tar_gz_is_reported_incomplete(tmp_path: Path) -> None:
    data = _good_wav(tmp_path)
    info = tarfile.TarInfo("audio/a.wav")
    whole = _tar(tmp_path / "whole.tar.gz", [info], {"audio/a.wav": data}).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ArchiveError, match="archive_not_complete"):
        extract_archive(cut, tmp_path / "out")


def test_zip_crc_corruption_names_the_member(tmp_path: Path) -> None:
    data = _good_wav(tmp_path)
    archive = tmp_path / "crc.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("audio/a.wav", data)
    raw = bytearray(archive.read_bytes())
    raw[len(data) // 2 + 60] ^= 0xFF  # flip a byte inside the stored member data
    archive.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="'audio/a.wav'.*CRC"):
        verify_archive(archive)


def test_truncated_zip_is_reported_incomplete(tmp_path: Path) -> None:
    whole = _zip(tmp_path / "w.zip", {"audio/a.wav": _good_wav(tmp_path)}).read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole[: len(whole) - 40])
    with pytest.raises(ArchiveError, match="archive_not_complete"):
        verify_archive(cut)


def test_unsupported_source_names_the_accepted_kinds(tmp_path: Path) -> None:
    (tmp_path / "x.rar").write_bytes(b"rar")
    with pytest.raises(ArchiveError, match=r"\.zip"):
        source_kind(tmp_path / "x.rar")


def test_ingest_from_tar_gz_extracts_catalog_and_quarantine(tmp_path: Path) -> None:
    good_a = write_audio(tmp_path / "a.flac", 3.0, seed=1).read_bytes()
    good_b = write_audio(tmp_path / "b.wav", 3.0, seed=2).read_bytes()
    members = [tarfile.TarInfo(n) for n in ("audio/a.flac", "audio/b.wav", "audio/broken.ogg")]
    archive = _tar(
        tmp_path / "raw.tar.gz", members,
        {"audio/a.flac": good_a, "audio/b.wav": good_b, "audio/broken.ogg": b"OggS not really"},
    )
    out = tmp_path / "ingested"
    result = ingest(archive, out, IngestConfig(), workers=1, progress=False)
    assert [t["track_id"] for t in result.tracks] == ["audio/a.flac", "audio/b.wav"]
    assert [(q["source_path"], q["reason"]) for q in result.quarantined] == [("audio/broken.ogg", "undecodable")]
    assert (out / "audio" / "audio" / "a.flac").read_bytes() == good_a
    assert not (out / "_extracted").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ingested.tmp")) == []
