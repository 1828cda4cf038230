"""`python -m musicid.cli`: what the DDP launcher starts on every rank (the `musicid` command itself)."""

from musicid.cli import run

run()
