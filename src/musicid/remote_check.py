"""Can this workspace read and write its DVC remotes? One line per remote, naming it.

Why: `dvc push` to a shared remote that refuses us says `ERROR: unexpected error - Permission denied
for user root on host …` without naming the remote, its URL, or what to change. Checking every remote
before a long push (or in CI) through DVC's own filesystem for that remote (ssh, s3, local, …) — list
the object folder, write, read back and delete a probe — answers which remote, and why, in one line.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from musicid.errors import MusicidError


class RemoteError(MusicidError):
    """A DVC remote is unknown, unreachable or refuses us; the message names it."""


@dataclass
class RemoteStatus:
    name: str
    url: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"remote {self.name!r} ({self.url}): {self.detail}"


def _hint(exc: BaseException, name: str) -> str:
    if isinstance(exc, PermissionError):
        return (f"permission denied ({exc}); check the user and key (`dvc remote modify --local {name} user|keyfile …`) "
                "and that the folder is writable for that user")
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)) and not isinstance(exc, FileNotFoundError):
        return f"cannot connect ({type(exc).__name__}: {exc}); check host, port and network"
    return f"{type(exc).__name__}: {exc}"


def check_remote(repo_root: str | Path, name: str) -> RemoteStatus:
    """List, write, read back and delete a probe in remote `name`'s object folder."""
    from dvc.repo import Repo

    repo = Repo(str(repo_root))
    try:
        remotes = repo.config["remote"]
        if name not in remotes:
            known = ", ".join(remotes) or "none"
            raise RemoteError(f"no DVC remote named {name!r} (configured: {known}; `dvc remote list`)")
        url = remotes[name].get("url", "")
        try:
            odb = repo.cloud.get_remote_odb(name)
            fs, folder = odb.fs, odb.path
            fs.makedirs(folder, exist_ok=True)
            fs.ls(folder)
            probe = fs.join(folder, f".musicid-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            payload = b"musicid remote check\n"
            fs.pipe_file(probe, payload)
            try:
                if fs.cat_file(probe) != payload:
                    return RemoteStatus(name, url, False, "what was written reads back different")
            finally:
                fs.rm_file(probe)
        except Exception as exc:  # noqa: BLE001 - every backend raises its own types; named in the line
            return RemoteStatus(name, url, False, _hint(exc, name))
        return RemoteStatus(name, url, True, "ok (list, write, read back, delete)")
    finally:
        repo.close()


def configured_remotes(repo_root: str | Path) -> list[str]:
    """Every remote in the repository's DVC config, the default one first."""
    from dvc.repo import Repo

    repo = Repo(str(repo_root))
    try:
        names = list(repo.config["remote"])
        default = repo.config["core"].get("remote")
    finally:
        repo.close()
    return sorted(names, key=lambda n: n != default)
