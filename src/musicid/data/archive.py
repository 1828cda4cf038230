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


def source_kind(path: str | Path) -> str:
    """'folder', 'tar' or 'zip'; ArchiveError for anything else."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise ArchiveError(f"{path}: no such file or folder")
    name = path.name.lower()
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
        raise ArchiveError(f"{path}: archive_not_complete or unreadable: {exc}") from None
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
        raise ArchiveError(f"{path}: archive_not_complete: not a complete zip file ({exc})") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{path}: archive_not_complete: {exc}") from None
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
