"""Atomic outputs: write beside the target, rename when complete.

An interrupted stage then leaves only a `.<name>.tmp-<pid>-*` sibling that nothing trusts; the
next write of that target removes it (and says how much it freed) unless the process named in it
is still running, i.e. another live run is writing there now.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger("musicid")


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


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_staging(target)
    tmp = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent))
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if target.exists():
        _remove(target)
    os.replace(tmp, target)


@contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary file path that replaces `target` only if the block succeeds."""
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
    except BaseException:
        _remove(tmp)
        raise
    os.replace(tmp, target)


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
