"""Open a musicid window store (a Zarr v3 group) and refuse what is not one, with one line."""

from __future__ import annotations

from pathlib import Path

import zarr

from musicid.errors import MusicidError
from musicid.store.writer import FORMAT_VERSION, TARGETS, WAVEFORM

class StoreError(MusicidError, ValueError):
    """A path is not a readable musicid store, or a request does not fit the store."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No store at the given path."""


def open_store(path: str | Path) -> zarr.Group:
    """Open a store read-only after checking that it is a complete musicid store of this format."""
    path = Path(path)
    if not path.exists():
        raise StoreNotFoundError(f"{path}: no shard store here (run the shards stage first)")
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: not a Zarr v3 store (no zarr.json)")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a broken or non-group store
        raise StoreError(f"{path}: not a readable Zarr v3 group ({type(exc).__name__}: {exc})") from None
    version = group.attrs.get("format_version")
    if version is None:
        raise StoreError(f"{path}: not a musicid shard store (no format_version attribute)")
    if version != FORMAT_VERSION:
        raise StoreError(
            f"{path}: store format_version {version} is not supported (expected {FORMAT_VERSION}); "
            "rebuild it with the shards stage"
        )
    members = set(group.array_keys())
    if WAVEFORM not in members or TARGETS not in set(group.group_keys()):
        raise StoreError(f"{path}: incomplete store (missing {WAVEFORM} or {TARGETS}/)")
    return group


def _as_group(store: str | Path | zarr.Group) -> zarr.Group:
    return store if isinstance(store, zarr.Group) else open_store(store)


