"""The fingerprinter's DVC stages (`musicid stage fingerprint-<name>`): thin, over the family's library."""

from __future__ import annotations

from typing import Any

from musicid.config import Params
from musicid.fsutil import atomic_dir, write_json
from musicid.layout import INGEST_REPORT, INGESTED, MANIFESTS, family_layout

LAYOUT = family_layout("fingerprint")
SHARDS, MODEL, CHECKPOINTS, INDEX = LAYOUT.shards, LAYOUT.model, LAYOUT.checkpoints, LAYOUT.index
TRAIN_REPORT, EVAL_REPORT = LAYOUT.train_report, LAYOUT.eval_report
MODEL_CARD, BENCHMARK_REPORT, RELEASE_CHECKLIST = LAYOUT.model_card, LAYOUT.benchmark_report, LAYOUT.release_checklist


def sections(params: Params, *names: str) -> dict[str, Any]:
    """The family's named params sections as plain dicts (what a stage logs as its MLflow params)."""
    return {name: getattr(params.fingerprint, name).model_dump() for name in names}


def shards(params: Params, workers: int | None = None) -> None:
    from musicid.data.ingest import default_workers
    from musicid.data.splits import load_manifests
    from musicid.store import store_summary
    from musicid.store.build import build_split_store

    manifests = load_manifests(MANIFESTS)
    summaries = {}
    with atomic_dir(SHARDS) as staging:
        for split in params.fingerprint.shards.splits:
            build_split_store(
                manifests[split], INGESTED, staging / f"{split}.zarr", params.fingerprint.shards,
                workers=workers or default_workers(), split=split,
            )
            # name the published path, not the staging one, so the summary (and its DVC hash) is stable
            summaries[split] = store_summary(staging / f"{split}.zarr") | {"path": str(SHARDS / f"{split}.zarr")}
        write_json(staging / "summary.json", summaries)
    for split, summary in summaries.items():
        print(f"shards: {split}: {summary['rows']} windows, {summary['file_count']} files → {SHARDS}/{split}.zarr")


def train(params: Params, workers: int | None = None) -> None:
    from musicid.tracking import TAG_SIGNATURE, stage_run
    from musicid.families.fingerprint.train import train_fingerprinter

    logged = sections(params, "shards", "model", "train") | {"deterministic": params.train.deterministic}
    with stage_run("fingerprint-train", params.tracking, logged, system_metrics=params.tracking.system_metrics,
                   family="fingerprint") as run:
        with atomic_dir(TRAIN_REPORT) as report:
            result = train_fingerprinter(
                SHARDS / "train.zarr", SHARDS / "val.zarr", params.fingerprint.model, params.fingerprint.train, MODEL, report, CHECKPOINTS,
                log_epoch=run.log_epoch, deterministic=params.train.deterministic,
            )
        run.set_tags({TAG_SIGNATURE: result.signature})
        run.log_metrics({"best_epoch": result.best_epoch, "best_val_top1": result.best["val_top1"],
                         "epochs_run": len(result.history)})
        run.log_artifact(TRAIN_REPORT, "reports/train")
        run.log_artifact(MODEL / "config.json", "model")
    print(f"train: best epoch {result.best_epoch} (val top-1 {result.best['val_top1']:.3f}), signature {result.signature} → {MODEL}")


def train_prod(params: Params, workers: int | None = None) -> None:
    """A production fingerprinter on every train and val track (test tracks held out): K-fold, then a final run."""
    from musicid.families.fingerprint.prod import train_fingerprinter_prod
    from musicid.tracking.prod import run_prod_stage

    cfg = params.fingerprint
    run_prod_stage("fingerprint", params, sections(params, "shards", "model", "train", "prod"), lambda run, report: (
        train_fingerprinter_prod(SHARDS, cfg.model, cfg.train, cfg.prod, LAYOUT.prod_model, report, LAYOUT.prod_state,
                                 run=run, deterministic=params.train.deterministic)))


def index(params: Params, workers: int | None = None) -> None:
    from musicid.index import build_index, index_refs_from_manifest
    from musicid.families.fingerprint.io import load_model

    cfg = params.fingerprint.index
    loaded = load_model(MODEL, cfg.device)
    refs = index_refs_from_manifest(MANIFESTS / "refs.jsonl", INGESTED)
    if cfg.engine == "dask":  # same index, embedded by Dask workers that load the model from MODEL themselves
        from musicid.index.distributed import build_index_distributed, cluster_of

        meta = build_index_distributed(refs, loaded, MODEL, load_model, INDEX, cfg, cluster_of(cfg))
    else:
        meta = build_index(refs, loaded, INDEX, cfg)
    print(f"index: {meta['n_refs']} refs, {meta['n_vectors']} vectors ({meta['kind']}) → {INDEX}")


def music_bed(sample_rate: int, seconds: float = 60.0) -> Any:
    """Background music that is in no index: a synthetic work outside the generator's range."""
    import torch

    from musicid.audio import to_model_rate
    from musicid.config import SynthConfig
    from musicid.data.synth import render_track_preview

    audio, rate = render_track_preview(999_999, 0, SynthConfig(seed=12345, min_duration_s=seconds, max_duration_s=seconds))
    return torch.from_numpy(to_model_rate(audio, rate, sample_rate))[None, :]


def evaluate(params: Params, workers: int | None = None) -> None:
    from musicid.families.fingerprint.evaluate import evaluate_queries, summarize, write_reports
    from musicid.fsutil import read_jsonl
    from musicid.families.fingerprint.identifier import Identifier
    from musicid.families.fingerprint.evaluate import key_metrics
    from musicid.index import load_index
    from musicid.families.fingerprint.io import load_model
    from musicid.tracking import stage_run

    loaded = load_model(MODEL, params.fingerprint.index.device)
    identifier = Identifier(loaded, load_index(INDEX, expected_signature=loaded.signature), params.fingerprint.identify)
    logged = sections(params, "shards", "model", "train", "index", "identify", "evaluate")
    with stage_run("fingerprint-evaluate", params.tracking, logged, signature=loaded.signature,
                   parent_stage="fingerprint-train", family="fingerprint") as run:
        positions = {ref["ref"]: i for i, ref in enumerate(identifier.index.refs)}
        rows = evaluate_queries(
            read_jsonl(MANIFESTS / "queries.jsonl"), INGESTED, identifier, loaded.spec.sample_rate,
            params.fingerprint.evaluate, music_bed(loaded.spec.sample_rate), ref_positions=positions,
        )
        metrics = summarize(rows, list(params.fingerprint.evaluate.conditions), params.fingerprint.evaluate.target_fpr)
        metrics["model_signature"] = loaded.signature
        with atomic_dir(EVAL_REPORT) as staging:
            write_reports(rows, metrics, staging, list(params.fingerprint.evaluate.conditions))
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
    open_set = metrics.get("open_set")
    if open_set:
        lines.append(f"{'min score':<14}" + "".join(f"{open_set['threshold_by_length'][l]:>8.3f}" for l in lengths))
        lines.append(f"{'TPR @ FPR':<14}" + "".join(f"{open_set['by_length'][l]['tpr']:>8.3f}" for l in lengths))
        lines.append(f"{'FPR':<14}" + "".join(f"{open_set['by_length'][l]['fpr']:>8.3f}" for l in lengths))
    lines.append(
        f"queries {metrics['queries']}, offset accuracy {metrics['offset_accuracy']:.3f}, "
        f"latency p50 {metrics['latency_ms']['p50']:.1f} ms / p95 {metrics['latency_ms']['p95']:.1f} ms"
    )
    if open_set:
        lines.append(f"open set: min score per length for FPR ≤ {open_set['target_fpr']:g} "
                     f"(measured {open_set['fpr']:.4f} on {open_set['negatives']} out-of-catalog queries), "
                     f"TPR {open_set['tpr']:.3f} on the main conditions")
    return "\n".join(lines)


def report(params: Params, workers: int | None = None) -> None:
    """Model card, benchmark report and release checklist; then register the model (alias candidate)."""
    from musicid.families.fingerprint.release import benchmark_report, gather, measure_embedding_speed, model_card, release_checklist
    from musicid.families.fingerprint.io import load_model
    from musicid.fsutil import atomic_file
    from musicid.release import peak_memory_mb
    from musicid.tracking import data_version, stage_run

    loaded = load_model(MODEL, params.fingerprint.index.device)
    inputs = gather(params, MODEL, TRAIN_REPORT, EVAL_REPORT, INDEX, SHARDS, INGEST_REPORT, MANIFESTS, data_version("fingerprint"))
    speed = measure_embedding_speed(loaded, hop_s=params.fingerprint.index.hop_s)
    checklist, ready = release_checklist(inputs, params.fingerprint.registry.gates)
    documents = {MODEL_CARD: model_card(inputs), BENCHMARK_REPORT: benchmark_report(inputs, speed), RELEASE_CHECKLIST: checklist}
    for path, text in documents.items():
        with atomic_file(path) as tmp:
            tmp.write_text(text)
    print(f"report: {', '.join(map(str, documents))}; release checklist: {'READY' if ready else 'NOT READY'}")
    with stage_run("fingerprint-report", params.tracking, sections(params, "registry"), signature=inputs.signature,
                   parent_stage="fingerprint-train", family="fingerprint") as run:
        resources = {"model_size_mb": (MODEL / "model.pt").stat().st_size / 1e6, "peak_memory_mb": peak_memory_mb()}
        run.log_metrics(inputs.metrics | resources | {"embed_x_realtime": speed["x_realtime"]})
        for path in documents:
            run.log_artifact(path, "reports")
        run.log_artifact(TRAIN_REPORT / "curves.png", "reports/train")
        run.log_artifact(EVAL_REPORT / "hit_rate.png", "reports/eval")
        if run.run is not None:
            register(params, inputs.metrics | resources, run_tags=run.run.data.tags)
    if not params.tracking.enabled:
        print("report: tracking.enabled is false: model not registered")


def calibrated_open_set(signature: str) -> dict[str, Any] | None:
    """The open-set threshold curve fingerprint-evaluate calibrated for the workspace's model and index, if any."""
    from musicid.fsutil import read_json

    path = EVAL_REPORT / "metrics.json"
    if not path.is_file():
        return None
    metrics = read_json(path)
    open_set = metrics.get("open_set")
    if metrics.get("model_signature") != signature or not open_set:
        return None
    return {"segments": open_set["segments"], "min_scores": open_set["min_scores"], "target_fpr": open_set["target_fpr"]}


def bundle_settings(params: Params) -> dict[str, Any]:
    """What the registered bundle's predictor reads: fingerprint.identify and the calibrated open-set curve."""
    from musicid.fsutil import read_json

    return {"identify": params.fingerprint.identify.model_dump(),
            "open_set": calibrated_open_set(read_json(MODEL / "config.json")["signature"])}


def register(params: Params, metrics: dict[str, float], run_tags: dict[str, str]) -> str:
    """Register models/fingerprint (+ data/index/fingerprint) inside the active run, alias candidate; return the version."""
    import tempfile
    from pathlib import Path

    from musicid.families.fingerprint import pyfunc_entry
    from musicid.index.build import index_refs_from_manifest
    from musicid.tracking import register_bundle
    from musicid.tracking.selfcheck import clip_or_none, cut_clip

    tags = {k: v for k, v in run_tags.items() if k.startswith("musicid.")}

    cfg = params.fingerprint
    with tempfile.TemporaryDirectory() as scratch:  # known answer: 4 s of the first reference, found at 1 s
        clip = clip_or_none(lambda: cut_clip(sorted(index_refs_from_manifest(MANIFESTS / "refs.jsonl", INGESTED))[0][1],
                                             Path(scratch) / "selfcheck"), "the first reference")
        version, is_new = register_bundle(MODEL, INDEX, metrics, cfg.registry, bundle_settings(params), tags,
                                          pyfunc_entry.__file__, cfg.identify.top, known_answer_clip=clip)
    name, alias = params.fingerprint.registry.model_name, params.fingerprint.registry.candidate_alias
    print(f"registry: {name} version {version} {'registered' if is_new else 'already registered (same model + index)'}, "
          f"alias @{alias} → {version}")
    return version


def register_workspace(params: Params) -> str:
    """`musicid registry register`: register the workspace's model with its evaluation, in a run of its own."""
    from musicid.families.fingerprint.evaluate import key_metrics
    from musicid.tracking.workspace import register_workspace as register_it

    return register_it("fingerprint", params.tracking, sections(params, "registry"), MODEL, EVAL_REPORT, INDEX,
                       key_metrics, lambda metrics, tags: register(params, metrics, tags))


STAGES = {"shards": shards, "train": train, "index": index, "evaluate": evaluate, "report": report,
          "train-prod": train_prod}
