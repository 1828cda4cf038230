"""The work identifier's model card and benchmark report (the checklist shape is the spine's)."""

from __future__ import annotations

from typing import Any

from musicid.config import Params

TESTSET_TITLES = {
    "test_unseen": "unseen works (never trained on), all-vs-all",
    "test_seen": "seen works, held-out performances vs themselves + training performances",
    "val_unseen": "validation: unseen works", "val_seen": "validation: seen works' held-out performances",
}


def _cell(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def metrics_table(evaluation: dict[str, Any]) -> list[str]:
    lines = ["| test set | queries | mAP | MR1 | top-1 | top-10 |", "|---|---|---|---|---|---|"]
    for name, m in evaluation["testsets"].items():
        lines.append(f"| {TESTSET_TITLES.get(name, name)} | {m.get('queries', 0)} | {_cell(m.get('mAP'))} | "
                     f"{_cell(m.get('MR1'), 2)} | {_cell(m.get('top1'))} | {_cell(m.get('top10'))} |")
    return lines


def model_card(params: Params, model: dict[str, Any], train: dict[str, Any], evaluation: dict[str, Any],
               split: dict[str, Any], features: dict[str, Any], index: dict[str, Any], data_version: str) -> str:
    spec, cfg = model["spec"], params.works
    chunks = ", ".join(f"{f} frames ({f * spec['hop_s']:g} s)" for f in cfg.train.chunk_frames)
    lines = [
        f"# Model card: {cfg.registry.model_name}",
        "",
        f"Signature `{model['signature']}` · family `works` · backbone `{spec['backbone']}` · "
        f"{spec['embedding_dim']}-d embedding · trained on {train['train_works']} works.",
        "",
        "## Intended use",
        "Which composition (work) a performance is a version of: covers, live takes, re-arrangements. "
        "`musicid works identify` ranks the works of the reference index for a query performance.",
        "",
        "## Data",
        f"- Source: `{params.ingest.source}` (data version `{data_version or 'unlocked'}`).",
        f"- Split (works.split, seed {cfg.split.seed}): " + ", ".join(
            f"{role} {n} performances / {split['works'][role]} works" for role, n in split["performances"].items()) + ".",
        f"- Features: CQT {spec['n_bins']} bins, {spec['bins_per_octave']} per octave from {spec['fmin_hz']:g} Hz, "
        f"hop {spec['hop_s']:g} s at {spec['sample_rate']} Hz; train copies at speeds {cfg.features.train_speeds} "
        f"(train split only; leakage check: {'pass' if features.get('leakage', {}).get('ok') else 'FAIL'}).",
        f"- Training chunks: {chunks}. Queries shorter than {spec['min_frames'] * spec['hop_s']:g} s are refused.",
        "",
        "## Evaluation (this pipeline's held-out data)",
        *metrics_table(evaluation),
        "",
        f"Best epoch {train['best_epoch']} of {train['epochs_run']} by validation mAP "
        f"({train['validated_on']}: {train['val_mAP']:.3f}). Query latency (decode + CQT + embed + search of a whole performance, CPU) p50 "
        f"{evaluation['latency_ms']['p50']:.0f} ms / p95 {evaluation['latency_ms']['p95']:.0f} ms.",
        "",
        "## Index",
        f"{index['n_refs']} performances of {index.get('works', '?')} works, {index['kind']} FAISS index, work centroids.",
        "",
        "## Limitations",
        "- The default model is trained on the embedded synthetic archive: real covers (other arrangements, "
        "instrumentation, structure changes) need training on real versions (see benchmarks/works_chorales.py).",
        "- One embedding per performance: medleys and partial quotations are out of scope.",
        "",
        "## Reproduce",
        "```",
        "dvc repro works-report          # rebuilds exactly this model from params.yaml + dvc.lock",
        "dvc pull models/works           # or fetch the pinned weights from the DVC remote",
        "```",
        "",
    ]
    return "\n".join(lines)


def benchmark_report(params: Params, model: dict[str, Any], evaluation: dict[str, Any], features: dict[str, Any],
                     index: dict[str, Any], index_bytes: int, resources: dict[str, float], training_seconds: float) -> str:
    lines = [
        f"# Benchmark report: {params.works.registry.model_name} `{model['signature']}`",
        "",
        "| what | figure |",
        "|---|---|",
        f"| query latency p50 / p95 (decode + CQT + embed + search of a whole performance, CPU) | {evaluation['latency_ms']['p50']:.1f} / "
        f"{evaluation['latency_ms']['p95']:.1f} ms ({evaluation['latency_ms']['queries']} queries) |",
        f"| peak memory of the evaluating process | {resources['peak_memory_mb']:.0f} MB |",
        f"| model size | {resources['model_size_mb']:.2f} MB |",
        f"| index | {index['kind']}, {index['n_vectors']} vectors, {index_bytes / 1e6:.2f} MB on disk |",
        f"| training | {training_seconds:.0f} s |",
    ]
    for split, summary in features.get("stores", {}).items():
        lines.append(f"| features {split} | {summary['items']} items, {summary['frames']} frames, "
                     f"{summary['file_count']} files, {summary['bytes'] / 1e6:.1f} MB |")
    return "\n".join(lines + [""])
