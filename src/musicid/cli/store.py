"""`musicid store`: look into a Zarr store."""

from __future__ import annotations


import click

from musicid.cli.base import (
    JSON_OPTION, _emit_json, main,
)


@main.group()
def store() -> None:
    """Look into Zarr stores: window stores (fingerprint-shards) and ragged feature stores (works-features)."""


@store.command("info")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@JSON_OPTION
def store_info(paths: tuple[str, ...], as_json: bool) -> None:
    """Rows (or items and frames), widths, dtype, compressor, files and bytes of each store in PATHS."""
    import zarr

    from musicid.store import store_summary
    from musicid.store.ragged import RaggedStore

    summaries = []
    for path in paths:
        try:
            ragged = "ragged_format_version" in zarr.open_group(path, mode="r").attrs
        except Exception:  # not a Zarr group at all: store_summary names the problem
            ragged = False
        summaries.append(RaggedStore(path).summary() | {"path": path} if ragged else store_summary(path))
    if as_json:
        _emit_json(summaries if len(paths) > 1 else summaries[0])
        return
    for path, summary in zip(paths, summaries):
        if len(paths) > 1:
            click.echo(f"-- {path}")
        for key, value in summary.items():
            click.echo(f"{key:>16}  {value}")
