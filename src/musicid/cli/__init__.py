"""`musicid` command line: one entry point; one module per command group.

data (sources, manifests, synthetic music) · smoke / bench (workflows) · store · index / identify /
metrics (fingerprint) · works (work identifier) · pitch (per-window pitches) · registry (every family) · stage (dvc.yaml's stages).
"""

from musicid.cli import data, fingerprint, pitch, registry, stage, store, workflows, works  # noqa: F401  (register commands)
from musicid.cli.base import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
