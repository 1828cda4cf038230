"""`musicid works`: identify the work a performance is a version of; add performances to the index."""

from __future__ import annotations


from musicid.cli.base import main


@main.group()
def works() -> None:
    """Work (cover-song) identification: rank compositions for a performance."""
