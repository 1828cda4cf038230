"""Run the pipeline's stage functions in a scratch folder: what `musicid smoke` and the strategy bench do.

The folder gets its own params.yaml (the validated Params it was given) and the same relative
layout as the repository (data/, models/, reports/), so every artifact is where the DVC stages
would put it and the same functions produce it; only DVC's bookkeeping is skipped.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path
from typing import Any, Iterator

import yaml

from musicid.config import Params
from musicid.layout import MANIFESTS, family_layout

FP = family_layout("fingerprint")
CHAIN = ("ingest", "prepare", "fingerprint-shards", "fingerprint-train", "fingerprint-index", "fingerprint-evaluate",
         "fingerprint-report")


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def link_files(root: Path, files: list[str], out: Path) -> None:
    """Symlink root/<rel> to out/<rel> for each relative path: a subset of a library without copying it."""
    for rel in files:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to((root / rel).resolve())


def pick_subset(folder: Path, size: int, seed: int, out: Path) -> int:
    """Link a seeded random `size` audio files of `folder` into `out` (same relative paths); return the count."""
    from musicid.audio import list_files

    audio, _ = list_files(folder)
    chosen = sorted(random.Random(seed).sample(audio, min(size, len(audio)))) if size else audio
    link_files(folder, chosen, out)
    return len(chosen)


def run_chain(work_dir: Path, params: Params, stages: tuple[str, ...] = CHAIN, workers: int | None = None) -> None:
    """Write work_dir/params.yaml and run `stages` in order inside work_dir."""
    from musicid.stages import all_stages

    stage_fns = all_stages()
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    with working_dir(work_dir):
        for name in stages:
            print(f"== {name} ({work_dir})")
            stage_fns[name](params, workers=workers)


def with_updates(params: Params, updates: dict[str, dict[str, Any]]) -> Params:
    """A copy of params with some keys of some sections replaced, validated again.

    Sections are named by their dotted path: {"ingest": {...}, "fingerprint.train": {...}}.
    """
    from musicid.config import parse_params

    raw = params.model_dump(mode="json")
    for section, values in updates.items():
        node = raw
        for part in section.split("."):
            node = node[part]
        node.update(values)
    return parse_params(raw)


def smoke_params(base: Params, source: Path, source_type: str, metadata: str | None, device: str, query_duration: float,
                 eval_ratio: float, epochs: int, steps: int, seed: int, max_queries: int) -> Params:
    """Small, fast settings for a first end-to-end run on someone's own music (device already resolved)."""
    return with_updates(base, {
        "ingest": {"source": str(source), "source_type": source_type, "query_duration_s": query_duration}
        | ({"metadata": metadata} if metadata else {}),
        "prepare": {"seed": seed, "test_fraction": eval_ratio, "val_fraction": 0.2, "query_lengths_s": [query_duration],
                    "queries_per_track": 8},  # the max_queries cap sets the budget
        "fingerprint.train": {"seed": seed, "device": device, "epochs": epochs, "steps_per_epoch": steps,
                              "patience": epochs},
        "fingerprint.index": {"device": device},
        "fingerprint.evaluate": {"seed": seed, "conditions": ["noise", "noise_reverb", "codec_noise", "telephone"],
                     "max_queries": max_queries},
    })


def run_smoke(source: Path, source_type: str, out: Path, params: Params, subset: int, seed: int) -> dict[str, Any]:
    """check → prepare → validate → short train → index → evaluate → report on a subset; a summary dict."""
    from musicid.data.inspect import load_ingested, readiness
    from musicid.data.splits import validate_manifests
    from musicid.errors import NotReadyError
    from musicid.fsutil import read_json

    out.mkdir(parents=True, exist_ok=True)
    if subset and source.is_dir():
        picked = out / "subset"
        pick_subset(source, subset, seed, picked)
        if (source / params.ingest.metadata).is_file():
            link_files(source, [params.ingest.metadata], picked)
        params = with_updates(params, {"ingest": {"source": str(picked.resolve())}})
    run_chain(out, params, ("ingest",))
    scan = load_ingested(out / "data/ingested")
    verdict = readiness([t["duration_s"] for t in scan.tracks], params.ingest.query_duration_s)
    if not verdict["ready_for_smoke"]:
        raise NotReadyError(f"{source}: not ready for a smoke run: {'; '.join(verdict['reasons'])}")
    run_chain(out, params, ("prepare",))
    validation = validate_manifests(out / MANIFESTS)
    if not validation["ok"]:
        raise NotReadyError(f"manifests failed validation: {validation['problems'][0]}")
    run_chain(out, params, CHAIN[2:])
    metrics = read_json(out / FP.eval_report / "metrics.json")
    return {
        "work_dir": str(out), "tracks": len(scan.tracks), "quarantined": len(scan.quarantined),
        "splits": validation["counts"], "device": params.fingerprint.train.device, "queries": metrics["queries"],
        "main_top1": metrics["main"]["top1"], "main_top5": metrics["main"]["top5"],
        "reports": {name: str(out / path) for name, path in (
            ("metrics", FP.eval_report / "metrics.json"), ("hit_rate_plot", FP.eval_report / "hit_rate.png"),
            ("model_card", FP.model_card), ("release_checklist", FP.release_checklist),
            ("benchmark_report", FP.benchmark_report), ("training_curves", FP.train_report / "curves.png"))},
    }
