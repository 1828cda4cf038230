"""Atomic outputs: write beside the target, rename when complete.

An interrupted stage then leaves only a `.<name>.tmp-<pid>-*` sibling that nothing trusts; the
next write of that target removes it (and says how much it freed) unless the process named in it
is still running, i.e. another live run is writing there now. A write that fills the disk removes
its staging at once and raises DiskFullError: the target, what had been written, what is free.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from musicid.errors import MusicidError

log = logging.getLogger("musicid")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def human_bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def is_disk_full(exc: BaseException) -> bool:
    """An OSError of a full disk or quota (also one raised in a worker process and passed back)."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def mount_point(path: str | Path) -> Path:
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


class DiskFullError(MusicidError):
    """The disk filled while an artifact was written; its staging is already removed."""

    def __init__(self, target: str | Path, written: int) -> None:
        mount = mount_point(target)
        self.target, self.written, self.free = Path(target), written, shutil.disk_usage(mount).free
        super().__init__(f"disk full writing {target}: {mount} filled after {human_bytes(written)} of it, which was "
                         f"removed again ({human_bytes(self.free)} free there now)")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.tmp-{os.getpid()}-"


def sweep_stale_staging(target: str | Path) -> int:
    """Remove `.<name>.tmp-*` siblings of `target` left by runs that are no longer running; bytes freed.

    Only staging of this target is touched; one whose owner (the pid in its name) still runs stays.
    """
    target = Path(target)
    return _sweep(sorted(target.parent.glob(f".{target.name}.tmp-*")))


def sweep_stale_staging_under(*roots: str | Path) -> int:
    """The same for every staging entry anywhere below `roots` (what a stage runs first: DVC may have
    restored the killed stage's outputs from its run cache, so that stage's own next write never comes)."""
    found = [p for root in map(Path, roots) if root.is_dir() for p in root.rglob(".*.tmp-*")
             if not any(".tmp-" in a.name for a in p.parents)]  # inside a stale folder: removed with it
    return _sweep(sorted(found))


def _sweep(candidates: list[Path]) -> int:
    freed = 0
    for stale in candidates:
        owner = stale.name.rsplit(".tmp-", 1)[1].split("-", 1)[0]  # `.<name>.tmp-<pid>-…`; older names have none
        if owner.isdigit() and _running(int(owner)):
            continue
        size = _size(stale)
        _remove(stale)
        freed += size
        log.info(f"removed {stale} ({size / 1e6:.1f} MB), staging left by an interrupted run")
    return freed


_publishing = True


def publish_nothing() -> None:
    """From now on atomic writes go to scratch space and are dropped: this process computes what
    another one publishes (a DDP worker rank: rank 0 writes the stage's outputs)."""
    global _publishing
    _publishing = False


def _scratch(is_dir: bool) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="musicid-unpublished-"))
    try:
        yield folder if is_dir else folder / "file"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `target` only if the block succeeds."""
    if not _publishing:
        yield from _scratch(is_dir=True)
        return
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_staging(target)
    tmp = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent))
    try:
        yield tmp
    except BaseException as exc:
        _discard(tmp, target, exc)
        raise
    if target.exists():
        _remove(target)
    os.replace(tmp, target)


@contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary file path that replaces `target` only if the block succeeds."""
    if not _publishing:
        yield from _scratch(is_dir=False)
        return
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_staging(target)
    fd, name = tempfile.mkstemp(prefix=_staging_prefix(target), dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600; published files get the usual permissions
    try:
        yield tmp
    except BaseException as exc:
        _discard(tmp, target, exc)
        raise
    os.replace(tmp, target)


def _discard(tmp: Path, target: Path, exc: BaseException) -> None:
    """Remove a failed write's staging; a full disk becomes DiskFullError (naming the target).

    Workers stopped with their stage (Ctrl-C reaches the whole process group) may still close a file
    or two in it: removal is retried for a few seconds, and staging that still will not go is left
    to the next run's sweep (its owner is dead by then) rather than hiding the error that stopped us."""
    written = _size(tmp) if is_disk_full(exc) and tmp.exists() else 0
    for attempt in range(20):
        try:
            _remove(tmp)
            break
        except OSError as failed:
            if attempt == 19:
                log.warning(f"could not remove staging {tmp} ({failed.strerror}); the next run removes it")
            time.sleep(0.25)
    if is_disk_full(exc):
        raise DiskFullError(target, written) from exc


def write_json(path: str | Path, data: Any) -> None:
    """Write pretty JSON atomically (sorted keys keep DVC hashes stable across runs)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    with atomic_file(path) as tmp:
        with tmp.open("w") as handle:
            for row in rows:
                handle.write(json.dumps(row, sort_keys=True) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


class BusyError(MusicidError):
    """Another live process is writing the same target."""


@contextmanager
def exclusive_writer(target: str | Path, busy: str = "") -> Iterator[None]:
    """Only one process writes `target` at a time: a lock (flock) on `.<name>.lock` beside it, which the
    kernel releases however its holder ends (SIGKILL too). A second writer stops at once with one line
    naming the holder (`busy` says who that is), instead of interleaving its writes (checkpoints,
    parts) with the first one's."""
    import fcntl

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise BusyError(f"{busy or f'another run is writing {target}'} (pid {holder}); wait for it to end or "
                            "stop it, then rerun") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def file_digest(path: str | Path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file, read in 1 MB chunks (sha256 for our records, md5 for DVC's objects)."""
    import hashlib

    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    return file_digest(path, "sha256")
