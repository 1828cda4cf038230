"""What every family's release documents share: gate rows, the checklist table, sizes and memory.

A family writes its own model card and benchmark figures; the release checklist's shape, the gate
check and the resource figures `musicid registry compare` shows are the same for all.
"""

from __future__ import annotations

import resource
from pathlib import Path

from musicid.config import GatesConfig

Row = tuple[str, bool, str]  # (check, passed, figure)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (what loading and querying a model cost)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def gate_rows(metrics: dict[str, float], gates: GatesConfig) -> list[Row]:
    from musicid.tracking.registry import check_gates

    return [(f"gate `{r.metric}` {'≥' if r.kind == 'min' else '≤'} {r.threshold:g}", r.passed,
             "not measured" if r.value is None else f"{r.value:g}") for r in check_gates(metrics, gates)]


def checklist(model_name: str, signature: str, rows: list[Row], champion_alias: str) -> tuple[str, bool]:
    """The release checklist as Markdown; (text, every row passed)."""
    passed = all(ok for _, ok, _ in rows)
    lines = [
        f"# Release checklist: {model_name} `{signature}`",
        "",
        f"**{'READY' if passed else 'NOT READY'}** to promote to @{champion_alias} "
        f"(`musicid registry promote <version> --alias {champion_alias}` checks the same gates).",
        "",
        "| check | result | figure |",
        "|---|---|---|",
        *[f"| {name} | {'pass' if ok else '**FAIL**'} | {figure} |" for name, ok, figure in rows],
        "",
    ]
    return "\n".join(lines), passed
