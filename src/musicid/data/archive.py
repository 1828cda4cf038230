"""Verify and safely unpack raw audio archives (tar, tar.gz/bz2/xz, zip) or take a folder as is.

Verification happens before anything is written: every member name is checked (no absolute paths,
no `..`, no links that point outside the archive, no device files) and the archive must be
complete (zip central directory and CRCs, compressed tar stream to its end). Errors name the member.
"""

from __future__ import annotations

import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from musicid.errors import ArchiveError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
DOWNLOADING_SUFFIXES = (".part", ".crdownload", ".download", ".partial", ".tmp")
ZIP_LOCAL_HEADER = b"PK\x03\x04"


def zip_shortfall(path: Path) -> str:
    """Byte counts for a zip whose end is missing: walk the local headers to the first member cut short."""
    size = path.stat().st_size
    offset, complete = 0, 0
    with path.open("rb") as handle:
        while True:
            handle.seek(offset)
            header = handle.read(30)
            if len(header) < 30 or header[:4] != ZIP_LOCAL_HEADER:
                break
            flags = int.from_bytes(header[6:8], "little")
            packed = int.from_bytes(header[18:22], "little")
            name_len, extra_len = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
            name = handle.read(name_len).decode("utf-8", "replace")
            end = offset + 30 + name_len + extra_len + packed
            if flags & 0x08 and packed == 0:  # sizes only in a trailing data descriptor: cannot tell
                return f"{size} bytes on disk; {complete} complete member(s) before {name!r}"
            if end > size:
                return f"{size} bytes on disk, member {name!r} needs bytes up to {end} ({end - size} missing)"
            complete += 1
            offset = end
    return f"{size} bytes on disk, {complete} complete member(s) up to byte {offset}, no central directory after them"


def tar_shortfall(path: Path) -> str:
    """Byte counts for a tar stream that ends early: how far it reads and which member it cuts."""
    size, last, needed, read = path.stat().st_size, None, 0, 0
    try:
        with tarfile.open(path, "r|*") as stream:
            for member in stream:
                last, needed = member.name, member.offset_data + member.size
                if member.isfile():
                    handle = stream.extractfile(member)
                    while handle is not None and handle.read(1 << 14):
                        read = member.offset_data + handle.tell()
                read = max(read, needed)
    except (tarfile.TarError, EOFError, OSError, zlib.error):
        pass
    where = f", member {last!r} needs {needed} uncompressed bytes, the stream ends near {read}" if last else ""
    return f"{size} bytes on disk{where}"


def source_kind(path: str | Path) -> str:
    """'folder', 'tar' or 'zip'; ArchiveError for anything else."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise ArchiveError(f"{path}: no such file or folder")
    name = path.name.lower()
    if name.endswith(DOWNLOADING_SUFFIXES):
        raise ArchiveError(f"{path}: archive_not_complete: still downloading ({path.stat().st_size} bytes so far); "
                           "wait for the download to finish")
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    raise ArchiveError(f"{path}: unsupported source; expected a folder, .zip or {', '.join(TAR_SUFFIXES)}")


def _check_member_name(archive: Path, name: str) -> str:
    """Return the normalised member path or raise if it could land outside the destination."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or PurePosixPath(unified).is_absolute() or (len(unified) > 1 and unified[1] == ":"):
        raise ArchiveError(f"{archive}: unsafe member {name!r}: absolute path")
    normalised = posixpath.normpath(unified)
    if normalised == ".." or normalised.startswith("../") or ".." in PurePosixPath(unified).parts:
        raise ArchiveError(f"{archive}: unsafe member {name!r}: path contains '..'")
    return normalised


def _check_link_target(archive: Path, name: str, target: str, relative_to_member: bool) -> None:
    unified = target.replace("\\", "/")
    if unified.startswith("/"):
        raise ArchiveError(f"{archive}: unsafe member {name!r}: link to absolute path {target!r}")
    base = posixpath.dirname(name) if relative_to_member else ""
    resolved = posixpath.normpath(posixpath.join(base, unified))
    if resolved == ".." or resolved.startswith("../"):
        raise ArchiveError(f"{archive}: unsafe member {name!r}: link points outside the archive ({target!r})")


def _verify_tar(path: Path) -> list[tarfile.TarInfo]:
    try:
        with tarfile.open(path, "r:*") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ArchiveError(f"{path}: archive_not_complete or unreadable: {tar_shortfall(path)} ({exc})") from None
    for member in members:
        name = _check_member_name(path, member.name)
        if member.issym():
            _check_link_target(path, name, member.linkname, relative_to_member=True)
        elif member.islnk():
            _check_link_target(path, name, member.linkname, relative_to_member=False)
        elif not (member.isfile() or member.isdir()):
            raise ArchiveError(f"{path}: unsafe member {member.name!r}: special file (device or fifo)")
    return members


def _verify_zip(path: Path) -> list[zipfile.ZipInfo]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            for info in members:
                name = _check_member_name(path, info.filename)
                if stat.S_ISLNK(info.external_attr >> 16):
                    _check_link_target(path, name, archive.read(info).decode("utf-8", "replace"), True)
            bad = archive.testzip()
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{path}: archive_not_complete: {zip_shortfall(path)} ({exc})") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{path}: archive_not_complete: {zip_shortfall(path)} ({exc})") from None
    if bad is not None:
        raise ArchiveError(f"{path}: corrupt member {bad!r}: CRC check failed")
    return members


def verify_archive(path: str | Path) -> int:
    """Check an archive is complete and safe to extract; return its member count."""
    path = Path(path)
    kind = source_kind(path)
    if kind == "tar":
        return len(_verify_tar(path))
    if kind == "zip":
        return len(_verify_zip(path))
    return sum(1 for _ in path.rglob("*"))


def extract_archive(path: str | Path, dest: str | Path) -> None:
    """Verify, then extract into `dest` (which should be a fresh temporary directory)."""
    path, dest = Path(path), Path(dest)
    kind = source_kind(path)
    verify_archive(path)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "tar":
            with tarfile.open(path, "r:*") as tar:
                tar.extractall(dest, filter="data")
        elif kind == "zip":
            with zipfile.ZipFile(path) as archive:
                archive.extractall(dest)
        else:
            shutil.copytree(path, dest, dirs_exist_ok=True, symlinks=False)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{path}: archive_not_complete: extraction failed: {exc}") from None
