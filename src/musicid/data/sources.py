"""Metadata adapters for open catalogs: FMA (`tracks.csv`) and MTG-Jamendo (`.tsv`), plus a plain CSV.

Each adapter turns the catalog's own metadata into rows keyed by what identifies a file in the
audio folder (its relative path or its file stem), with musicid's fields: track_id, work_id,
title, style (genre), artist and split (the catalog's official split: train / val / test).
"""

from __future__ import annotations

import csv
from pathlib import Path

from musicid.errors import ConfigError

SOURCE_TYPES = ("auto", "fma", "mtg_jamendo")
FMA_SPLITS = {"training": "train", "validation": "val", "test": "test"}


def read_csv_metadata(path: Path) -> dict[str, dict[str, str]]:
    """musicid's own CSV (file, track_id, work_id, version, title, style[, split]) keyed by file or track_id."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {(row.get("file") or row.get("track_id") or "").strip(): row for row in rows}


def read_fma_tracks(path: Path) -> dict[str, dict[str, str]]:
    """FMA's `fma_metadata/tracks.csv` (two header rows of (group, field), then `track_id`) keyed by file stem.

    FMA audio lives at `fma_<size>/<first 3 digits>/<6-digit id>.mp3`, so the stem is the id.
    Every FMA track is its own work; `set.split` gives the official training/validation/test split.
    """
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 3 or not rows[2] or rows[2][0] != "track_id":
        raise ConfigError(f"{path}: not FMA's tracks.csv (expected two header rows and a track_id row)")
    columns = {(group, field): i for i, (group, field) in enumerate(zip(rows[0], rows[1]))}

    def cell(row: list[str], group: str, field: str) -> str:
        i = columns.get((group, field))
        return row[i].strip() if i is not None and i < len(row) else ""

    out = {}
    for row in rows[3:]:
        if not row or not row[0].strip().isdigit():
            continue
        stem = f"{int(row[0]):06d}"
        track_id = f"fma{stem}"
        out[stem] = {
            "track_id": track_id, "work_id": track_id, "title": cell(row, "track", "title"),
            "style": cell(row, "track", "genre_top"), "artist": cell(row, "artist", "name"),
            "split": FMA_SPLITS.get(cell(row, "set", "split"), ""), "subset": cell(row, "set", "subset"),
        }
    return out


def read_mtg_jamendo(path: Path) -> dict[str, dict[str, str]]:
    """An MTG-Jamendo `.tsv` (TRACK_ID, ARTIST_ID, ALBUM_ID, PATH, DURATION, TAGS...) keyed by PATH and stem.

    Audio lives at `<NN>/<number>.mp3` (PATH); tags look like `genre---rock`, and the first genre
    tag becomes the style. A split file (`autotagging-train.tsv`, `-validation`, `-test`) names
    its split in the file name.
    """
    split = next((name for key, name in (("train", "train"), ("validation", "val"), ("test", "test"))
                  if key in path.stem), "")
    with path.open(encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        if header[:4] != ["TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH"]:
            raise ConfigError(f"{path}: not an MTG-Jamendo .tsv (expected TRACK_ID, ARTIST_ID, ALBUM_ID, PATH, ...)")
        out = {}
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 4:
                continue
            track_id, artist, _, rel = fields[:4]
            tags = fields[5:]
            genres = [tag.split("---", 1)[1] for tag in tags if tag.startswith("genre---")]
            row = {"track_id": track_id, "work_id": track_id, "title": track_id, "style": genres[0] if genres else "",
                   "artist": artist, "split": split, "tags": ",".join(tags)}
            out[rel] = row
            out[Path(rel).stem] = row
    return out


def load_metadata(root: Path, source_type: str, metadata: str) -> dict[str, dict[str, str]]:
    """Metadata rows for a source folder. `metadata` is a file name at the root or a path (fma/mtg_jamendo)."""
    if not metadata:
        return {}
    path = root / metadata if (root / metadata).is_file() else Path(metadata)
    if source_type == "auto":
        return read_csv_metadata(path) if path.is_file() else {}
    if not path.is_file():
        expected = "fma_metadata/tracks.csv" if source_type == "fma" else "a .tsv such as autotagging.tsv"
        raise ConfigError(f"ingest.metadata: {metadata} not found (for ingest.source_type {source_type}: {expected})")
    return read_fma_tracks(path) if source_type == "fma" else read_mtg_jamendo(path)
