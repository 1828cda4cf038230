"""Thin entry points called by dvc.yaml (`musicid stage NAME`): params in, artifacts out.

Paths are fixed here and in dvc.yaml; everything tunable lives in params.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from musicid.config import Params
from musicid.fsutil import atomic_dir, write_json

RAW_ARCHIVE = Path("data/raw/synthetic.tar.gz")
INGESTED = Path("data/ingested")
INGEST_REPORT = Path("reports/ingest")
MANIFESTS = Path("data/manifests")
SHARDS = Path("data/shards")
MODEL = Path("models/fingerprinter")
TRAIN_REPORT = Path("reports/train")
CHECKPOINTS = Path(".musicid/checkpoints")
INDEX = Path("data/index")
EVAL_REPORT = Path("reports/eval")
REPORTS = Path("reports")
MODEL_CARD = REPORTS / "model-card.md"
BENCHMARK_REPORT = REPORTS / "benchmark-report.md"
RELEASE_CHECKLIST = REPORTS / "release-checklist.md"


def sections(params: Params, *names: str) -> dict[str, Any]:
    """The named params.yaml sections as plain dicts (what a stage logs as its MLflow params)."""
    return {name: getattr(params, name).model_dump() for name in names}


def synth(params: Params, workers: int | None = None) -> None:
    from musicid.data.synth import build_archive

    build_archive(params.synth, RAW_ARCHIVE, workers=workers)


def ingest(params: Params, workers: int | None = None) -> None:
    from musicid.data.ingest import ingest as run_ingest
    from musicid.data.inspect import plot_durations, summarize

    scan = run_ingest(params.ingest.source, INGESTED, params.ingest, workers=workers)
    report = summarize(scan, params.ingest.query_duration_s)
    with atomic_dir(INGEST_REPORT) as staging:
        write_json(staging / "inspect.json", report)
        plot_durations(scan, staging / "durations.png")
    print(
        f"ingest: {report['files']['decodable']} tracks ({report['total_hours']:.2f} h), "
        f"{report['files']['quarantined']} quarantined → {INGESTED}/quarantine.json"
    )


def prepare(params: Params, workers: int | None = None) -> None:
    from musicid.data.splits import prepare as run_prepare

    summary = run_prepare(INGESTED / "catalog.json", MANIFESTS, params.prepare)
    print(f"prepare: tracks {summary['tracks']}, {summary['queries']} planned queries → {MANIFESTS}")


def shards(params: Params, workers: int | None = None) -> None:
    from musicid.data.ingest import default_workers
    from musicid.data.splits import load_manifests
    from musicid.store import store_summary
    from musicid.store.build import build_split_store

    manifests = load_manifests(MANIFESTS)
    summaries = {}
    with atomic_dir(SHARDS) as staging:
        for split in params.shards.splits:
            build_split_store(
                manifests[split], INGESTED, staging / f"{split}.zarr", params.shards,
                workers=workers or default_workers(), split=split,
            )
            # name the published path, not the staging one, so the summary (and its DVC hash) is stable
            summaries[split] = store_summary(staging / f"{split}.zarr") | {"path": str(SHARDS / f"{split}.zarr")}
        write_json(staging / "summary.json", summaries)
    for split, summary in summaries.items():
        print(f"shards: {split}: {summary['rows']} windows, {summary['file_count']} files → {SHARDS}/{split}.zarr")


def train(params: Params, workers: int | None = None) -> None:
    from musicid.tracking import TAG_SIGNATURE, stage_run
    from musicid.train.fingerprinter import train_fingerprinter

    logged = sections(params, "shards", "model", "train") | {"index": {"hop_s": params.index.hop_s}}
    with stage_run("train", params.tracking, logged, system_metrics=params.tracking.system_metrics) as run:
        with atomic_dir(TRAIN_REPORT) as report:
            result = train_fingerprinter(
                SHARDS / "train.zarr", SHARDS / "val.zarr", params.model, params.train, MODEL, report, CHECKPOINTS,
                index_hop_s=params.index.hop_s,
                log_epoch=lambda row: run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"])),
            )
        run.set_tags({TAG_SIGNATURE: result.signature})
        run.log_metrics({"best_epoch": result.best_epoch, "best_val_top1": result.best["val_top1"],
                         "epochs_run": len(result.history)})
        run.log_artifact(TRAIN_REPORT, "reports/train")
        run.log_artifact(MODEL / "config.json", "model")
    print(f"train: best epoch {result.best_epoch} (val top-1 {result.best['val_top1']:.3f}), signature {result.signature} → {MODEL}")


def index(params: Params, workers: int | None = None) -> None:
    from musicid.index import build_index, index_refs_from_manifest
    from musicid.models.io import load_model

    loaded = load_model(MODEL, params.index.device)
    meta = build_index(index_refs_from_manifest(MANIFESTS / "refs.jsonl", INGESTED), loaded, INDEX, params.index)
    print(f"index: {meta['n_refs']} refs, {meta['n_vectors']} vectors ({meta['kind']}) → {INDEX}")


def evaluate(params: Params, workers: int | None = None) -> None:
    from musicid.evaluate.run import evaluate_queries, summarize, write_reports
    from musicid.fsutil import read_jsonl
    from musicid.identify import Identifier
    from musicid.evaluate.run import key_metrics
    from musicid.index import load_index
    from musicid.models.io import load_model
    from musicid.tracking import stage_run

    loaded = load_model(MODEL, params.index.device)
    identifier = Identifier(loaded, load_index(INDEX, expected_signature=loaded.signature), params.identify)
    logged = sections(params, "shards", "model", "train", "index", "identify", "evaluate")
    with stage_run("evaluate", params.tracking, logged, signature=loaded.signature, parent_stage="train") as run:
        rows = evaluate_queries(
            read_jsonl(MANIFESTS / "queries.jsonl"), INGESTED, identifier.identify_signal, loaded.spec.sample_rate,
            params.evaluate,
        )
        metrics = summarize(rows, list(params.evaluate.conditions))
        metrics["model_signature"] = loaded.signature
        with atomic_dir(EVAL_REPORT) as staging:
            write_reports(rows, metrics, staging, list(params.evaluate.conditions))
        run.log_metrics(key_metrics(metrics))
        for name in ("metrics.json", "hit_rate.csv", "hit_rate.png"):
            run.log_artifact(EVAL_REPORT / name, "reports/eval")
    print(format_hit_table(metrics))


def format_hit_table(metrics: dict) -> str:
    """Top-1 per condition and query length, as printed at the end of `evaluate` and `make demo`."""
    conditions = list(metrics["by_condition"])
    lengths = sorted(metrics["main"]["by_length"], key=lambda label: float(label.rstrip("s")))
    lines = [f"{'top-1':<14}" + "".join(f"{length:>8}" for length in lengths)]
    for condition in conditions:
        cells = metrics["by_condition"][condition]
        lines.append(f"{condition:<14}" + "".join(f"{cells[length]['top1']:>8.3f}" for length in lengths))
    lines.append(f"{'main (top-1)':<14}" + "".join(f"{metrics['main']['by_length'][l]['top1']:>8.3f}" for l in lengths))
    lines.append(f"{'main (top-5)':<14}" + "".join(f"{metrics['main']['by_length'][l]['top5']:>8.3f}" for l in lengths))
    lines.append(
        f"queries {metrics['queries']}, offset accuracy {metrics['offset_accuracy']:.3f}, "
        f"latency p50 {metrics['latency_ms']['p50']:.1f} ms / p95 {metrics['latency_ms']['p95']:.1f} ms"
    )
    return "\n".join(lines)


def report(params: Params, workers: int | None = None) -> None:
    """Model card, benchmark report and release checklist; then register the model (alias candidate)."""
    from musicid.evaluate.release import benchmark_report, gather, measure_embedding_speed, model_card, release_checklist
    from musicid.fsutil import atomic_file
    from musicid.models.io import load_model
    from musicid.tracking import data_version, stage_run

    loaded = load_model(MODEL, params.index.device)
    inputs = gather(params, MODEL, TRAIN_REPORT, EVAL_REPORT, INDEX, SHARDS, INGEST_REPORT, MANIFESTS, data_version())
    speed = measure_embedding_speed(loaded, hop_s=params.index.hop_s)
    checklist, ready = release_checklist(inputs, params.registry.gates)
    documents = {MODEL_CARD: model_card(inputs), BENCHMARK_REPORT: benchmark_report(inputs, speed), RELEASE_CHECKLIST: checklist}
    for path, text in documents.items():
        with atomic_file(path) as tmp:
            tmp.write_text(text)
    print(f"report: {', '.join(map(str, documents))}; release checklist: {'READY' if ready else 'NOT READY'}")
    with stage_run("report", params.tracking, sections(params, "registry"), signature=inputs.signature,
                   parent_stage="train") as run:
        run.log_metrics(inputs.metrics | {"embed_x_realtime": speed["x_realtime"]})
        for path in documents:
            run.log_artifact(path, "reports")
        run.log_artifact(TRAIN_REPORT / "curves.png", "reports/train")
        run.log_artifact(EVAL_REPORT / "hit_rate.png", "reports/eval")
        if run.run is not None:
            register(params, inputs.metrics, run_tags=run.run.data.tags)
    if not params.tracking.enabled:
        print("report: tracking.enabled is false: model not registered")


def register(params: Params, metrics: dict[str, float], run_tags: dict[str, str]) -> str:
    """Register models/fingerprinter (+ data/index) inside the active run, alias candidate; return the version."""
    from musicid.tracking import register_bundle

    tags = {k: v for k, v in run_tags.items() if k.startswith("musicid.")}
    version, is_new = register_bundle(MODEL, INDEX, metrics, params.registry, params.identify, tags)
    name, alias = params.registry.model_name, params.registry.candidate_alias
    print(f"registry: {name} version {version} {'registered' if is_new else 'already registered (same model + index)'}, "
          f"alias @{alias} → {version}")
    return version


def register_workspace(params: Params) -> str:
    """`musicid registry register`: register the workspace's model with its evaluation, in a run of its own."""
    from musicid.errors import ConfigError, NotReadyError
    from musicid.evaluate.run import key_metrics
    from musicid.fsutil import read_json
    from musicid.tracking import stage_run

    if not params.tracking.enabled:
        raise ConfigError("params.yaml: tracking.enabled is false; enable it to use the registry")
    for path in (MODEL / "config.json", EVAL_REPORT / "metrics.json", INDEX / "meta.json"):
        if not path.is_file():
            raise NotReadyError(f"{path} not found: run `dvc repro evaluate` (or `dvc pull`) first")
    signature = read_json(MODEL / "config.json")["signature"]
    evaluation = read_json(EVAL_REPORT / "metrics.json")
    if evaluation.get("model_signature") != signature:
        raise NotReadyError(f"{EVAL_REPORT}/metrics.json evaluates model {evaluation.get('model_signature')}, "
                            f"not {signature} in {MODEL}: run `dvc repro evaluate` first")
    with stage_run("register", params.tracking, sections(params, "registry"), signature=signature,
                   parent_stage="train") as run:
        return register(params, key_metrics(evaluation), run.run.data.tags)


STAGES = {
    "synth": synth, "ingest": ingest, "prepare": prepare, "shards": shards,
    "train": train, "index": index, "evaluate": evaluate, "report": report,
}
