"""Re-hash the DVC cache (or a local remote) against what dvc.lock and the .dvc files record.

DVC trusts its cache: `dvc checkout` copies a truncated or bit-flipped cache object into the
workspace without a word (tried: rc 0, the file's md5 no longer the recorded one), and `dvc pull`
only verifies downloads when the remote says `verify = true` (this project's default remote does).
`musicid data verify-cache` reads every object an output needs (a file's, or a directory's listing
and each file in it), recomputes its md5 and names each corrupt one with the output and stage it
belongs to; `--remove` deletes those objects so the next `dvc pull` / `dvc repro` replaces them
instead of checking them out.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import yaml
from tqdm import tqdm

from musicid.errors import MusicidError
from musicid.fsutil import file_digest


class CacheCheckError(MusicidError):
    """Not a DVC workspace, or the store to check cannot be found."""


@dataclass(frozen=True)
class Output:
    owner: str  # the stage (dvc.lock) or .dvc file that records it
    path: str
    md5: str  # "<hex>" for a file, "<hex>.dir" for a directory


@dataclass
class Problem:
    output: Output
    obj: Path
    kind: str  # corrupt | missing
    detail: str = ""


@dataclass
class CacheReport:
    root: Path
    outputs: int = 0
    objects: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def corrupt(self) -> list[Problem]:
        return [p for p in self.problems if p.kind == "corrupt"]

    @property
    def missing(self) -> list[Problem]:
        return [p for p in self.problems if p.kind == "missing"]


def recorded_outputs(repo: Path) -> list[Output]:
    """Every output dvc.lock records (per stage) and every `dvc add`ed file (*.dvc)."""
    found: list[Output] = []
    lock = repo / "dvc.lock"
    if lock.is_file():
        for stage, entry in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).items():
            found += [Output(stage, out["path"], out["md5"]) for out in entry.get("outs", []) if out.get("md5")]
    for dvc_file in _dvc_files(repo):
        for out in (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", []):
            if out.get("md5"):
                found.append(Output(str(dvc_file.relative_to(repo)), out["path"], out["md5"]))
    return found


def _dvc_files(repo: Path) -> list[Path]:
    """`*.dvc` files of the workspace, hidden folders (.dvc, .git, .venv) left out."""
    found = []
    for folder, dirs, files in os.walk(repo):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / f for f in sorted(files) if f.endswith(".dvc") and not f.startswith(".")]
    return found


def _dvc(repo: Path, *args: str) -> str:
    done = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def cache_root(repo: Path) -> Path:
    return Path(_dvc(repo, "cache", "dir") or repo / ".dvc" / "cache")


def remote_root(repo: Path, name: str | None = None) -> Path:
    """The folder of a local-path remote (default: the project's default remote)."""
    name = name or _dvc(repo, "config", "core.remote")
    if not name:
        raise CacheCheckError("no default DVC remote: pass --remote NAME (`dvc remote list`)")
    url = _dvc(repo, "config", f"remote.{name}.url")
    if not url:
        raise CacheCheckError(f"no DVC remote {name!r} (`dvc remote list`)")
    if "://" in url and not url.startswith("file://"):
        raise CacheCheckError(f"remote {name} is {url}: only a local-folder remote can be re-hashed here; "
                              "`dvc pull` with the remote's `verify = true` checks the others on download")
    path = Path(url.removeprefix("file://"))
    return path if path.is_absolute() else (repo / ".dvc" / path).resolve()  # relative to .dvc/config


def object_path(root: Path, md5: str) -> Path:
    hexdigest = md5.removesuffix(".dir")
    return root / "files" / "md5" / hexdigest[:2] / (hexdigest[2:] + (".dir" if md5.endswith(".dir") else ""))


def _objects(root: Path, output: Output) -> Iterator[tuple[Path, str]]:
    """(object, md5 it must have) for an output: a file's object; a directory's listing, then its files."""
    obj = object_path(root, output.md5)
    yield obj, output.md5.removesuffix(".dir")
    if output.md5.endswith(".dir") and obj.is_file():
        try:
            entries = json.loads(obj.read_text())
        except (ValueError, UnicodeDecodeError):
            return  # the listing's own md5 check names it
        for entry in entries:
            yield object_path(root, entry["md5"]), entry["md5"]


def verify_store(repo: Path, root: Path, progress: bool = True) -> CacheReport:
    """Re-hash every object the recorded outputs need in `root` (a cache or a local remote)."""
    if not (repo / ".dvc").is_dir():
        raise CacheCheckError(f"{repo}: not a DVC workspace (no .dvc/)")
    report = CacheReport(root)
    outputs = recorded_outputs(repo)
    report.outputs = len(outputs)
    seen: dict[Path, Problem | None] = {}
    for output in tqdm(outputs, desc=f"verify {root}", unit="output", disable=not progress):
        for obj, want in _objects(root, output):
            if obj in seen:
                continue
            report.objects += 1
            if not obj.is_file():
                seen[obj] = Problem(output, obj, "missing")
            else:
                got = file_digest(obj, "md5")
                seen[obj] = None if got == want else Problem(output, obj, "corrupt", f"md5 {got}, recorded {want}")
            if seen[obj] is not None:
                report.problems.append(seen[obj])
    return report


def remove_corrupt(report: CacheReport) -> int:
    """Delete the corrupt objects (read-only in a cache: made writable first); how many."""
    for problem in report.corrupt:
        problem.obj.chmod(0o644)
        problem.obj.unlink()
    return len(report.corrupt)
