"""`musicid store`: look into a Zarr store."""

from __future__ import annotations


import click

from musicid.cli.base import (
    JSON_OPTION, _emit_json, main,
)


@main.group()
def store() -> None:
    """Look into Zarr window stores written by the shards stage."""


@store.command("info")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@JSON_OPTION
def store_info(path: str, as_json: bool) -> None:
    """Rows, window size, dtype, compressor, files and bytes of a store."""
    from musicid.store import store_summary

    summary = store_summary(path)
    if as_json:
        _emit_json(summary)
    else:
        for key, value in summary.items():
            click.echo(f"{key:>16}  {value}")
