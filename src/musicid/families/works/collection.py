"""A folder of performances with a CSV of work ids: what `works add`, `evaluate-folder` and `finetune` read.

CSV columns: `file` (relative to the folder) and `work_id` are needed; `track_id` defaults to the
file's path without extension. A missing needed column is refused naming it.
"""

from __future__ import annotations

import csv
from pathlib import Path

from musicid.errors import ConfigError

NEEDED = ("file", "work_id")


def read_collection(folder: str | Path, csv_path: str | Path | None = None,
                    only_works: set[str] | None = None) -> list[dict[str, str]]:
    """[{"path", "file", "track_id", "work_id"}] in CSV order (optionally only some works)."""
    folder = Path(folder)
    csv_path = Path(csv_path) if csv_path else folder / "metadata.csv"
    if not csv_path.is_file():
        raise ConfigError(f"{csv_path}: works CSV not found (columns: file, work_id[, track_id])")
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        for column in NEEDED:
            if column not in columns:
                raise ConfigError(f"{csv_path}: missing column {column!r} (has: {', '.join(columns) or 'none'})")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    out = []
    for row in rows:
        if only_works is not None and row["work_id"] not in only_works:
            continue
        track_id = row.get("track_id") or str(Path(row["file"]).with_suffix(""))
        out.append({"path": str(folder / row["file"]), "file": row["file"], "track_id": track_id, "work_id": row["work_id"]})
    return out


def read_work_list(path: str | Path | None) -> set[str] | None:
    """One work id per line (blank lines and #comments ignored); None without a file."""
    if path is None:
        return None
    lines = Path(path).read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}
