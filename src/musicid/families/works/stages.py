"""The work identifier's DVC stages (`musicid stage works-<name>`): thin, over the family's library."""

from __future__ import annotations

import csv
import json
import time
from typing import Any

from musicid.config import Params
from musicid.fsutil import atomic_dir, atomic_file, read_json
from musicid.layout import CATALOG, INGESTED, family_layout

LAYOUT = family_layout("works")
SPLITS, SHARDS, MODEL, INDEX = LAYOUT.manifests, LAYOUT.shards, LAYOUT.model, LAYOUT.index
TRAIN_REPORT, EVAL_REPORT, CHECKPOINTS = LAYOUT.train_report, LAYOUT.eval_report, LAYOUT.checkpoints
LATENCY_QUERIES = 30  # whole test performances identified from their audio files to time a query


def sections(params: Params, *names: str) -> dict[str, Any]:
    return {name: getattr(params.works, name).model_dump() for name in names}


def split(params: Params, workers: int | None = None) -> None:
    from musicid.families.works.split import split_catalog

    summary = split_catalog(CATALOG, SPLITS, params.works.split)
    print("works-split: " + ", ".join(f"{role} {n} ({summary['works'][role]} works)"
                                      for role, n in summary["performances"].items()) + f" → {SPLITS}")


def features(params: Params, workers: int | None = None) -> None:
    from musicid.data.ingest import default_workers
    from musicid.families.works.features import build_feature_stores
    from musicid.families.works.split import load_roles

    summary = build_feature_stores(load_roles(SPLITS), INGESTED, SHARDS, params.works.features,
                                   workers=workers or default_workers())
    for name, store in summary["stores"].items():
        print(f"works-features: {name}: {store['items']} items, {store['frames']} frames, {store['file_count']} files")
    for skipped in summary["skipped"]:
        print(f"  skipped {skipped['track_id']}: {skipped['reason']}")
    print(f"works-features: leakage check passed ({', '.join(summary['leakage']['checked'])}) → {SHARDS}")


def train(params: Params, workers: int | None = None) -> None:
    from musicid.families.works.train import train_works
    from musicid.tracking import TAG_SIGNATURE, stage_run

    cfg = params.works
    logged = sections(params, "features", "model", "train", "evaluate") | {"deterministic": params.train.deterministic}
    with stage_run("works-train", params.tracking, logged, system_metrics=params.tracking.system_metrics,
                   family="works") as run:
        with atomic_dir(TRAIN_REPORT) as report:
            result = train_works(
                SHARDS, cfg.model, cfg.train, cfg.evaluate, MODEL, report, CHECKPOINTS,
                log_epoch=run.log_epoch, deterministic=params.train.deterministic,
            )
        run.set_tags({TAG_SIGNATURE: result.signature})
        run.log_metrics({"best_epoch": result.best_epoch, "best_val_mAP": result.best["val_mAP"],
                         "epochs_run": len(result.history)})
        run.log_artifact(TRAIN_REPORT, "reports/train")
        run.log_artifact(MODEL / "config.json", "model")
    print(f"works-train: best epoch {result.best_epoch} (val mAP {result.best['val_mAP']:.3f}), "
          f"signature {result.signature} → {MODEL}")


def train_prod(params: Params, workers: int | None = None) -> None:
    """A production model on everything but the held-out works: stratified K-fold, then a final run (resumable)."""
    from musicid.families.works.prod import train_works_prod
    from musicid.tracking.prod import run_prod_stage

    cfg = params.works
    run_prod_stage("works", params, sections(params, "features", "model", "train", "prod"), lambda run, report: (
        train_works_prod(SHARDS, cfg.model, cfg.train, cfg.prod, LAYOUT.prod_model, report, LAYOUT.prod_state, run=run,
                         deterministic=params.train.deterministic)))


def _performances() -> Any:
    """The catalog's whole performances; the training-only synthetic works are never read."""
    from musicid.families.works.evaluate import Performances
    from musicid.families.works.features import SYNTHETIC_ROLE
    from musicid.store.ragged import RaggedStore

    return Performances.from_stores([RaggedStore(SHARDS / f"{name}.zarr") for name in ("train", "val", "test")],
                                    skip_roles=(SYNTHETIC_ROLE,))


def index(params: Params, workers: int | None = None) -> None:
    from musicid.families.works.align import chroma_recipe, pitch_classes
    from musicid.families.works.evaluate import embed_frames
    from musicid.families.works.index import write_works_index
    from musicid.families.works.io import load_model

    loaded = load_model(MODEL, params.works.index.device)
    perf = _performances()
    catalog = {t["track_id"]: t for t in read_json(CATALOG)["tracks"]}
    vectors = embed_frames(loaded.model, perf.frames, loaded.device, loaded.spec.min_frames)
    refs = [{"ref": track, "work_id": work, "content_hash": catalog[track]["content_hash"],
             "duration_s": catalog[track]["duration_s"]} for track, work in zip(perf.track_ids, perf.work_ids)]
    recipe = chroma_recipe(params.works.identify.rerank)
    chroma = [pitch_classes(frames, loaded.features.bins_per_octave, recipe) for frames in perf.frames]
    meta = write_works_index(INDEX, vectors, refs, loaded.signature, loaded.sample_rate, params.works.index, chroma,
                             recipe)
    print(f"works-index: {meta['n_refs']} performances of {meta['works']} works ({meta['kind']}) → {INDEX}")


def evaluate(params: Params, workers: int | None = None) -> None:
    from musicid.families.works.evaluate import embed_frames, flat_metrics, write_evaluation
    from musicid.families.works.identify import WorkIdentifier
    from musicid.families.works.io import load_model
    from musicid.tracking import stage_run

    cfg = params.works
    loaded = load_model(MODEL, cfg.index.device)
    perf = _performances()
    embeddings = embed_frames(loaded.model, perf.frames, loaded.device, loaded.spec.min_frames)
    identifier = WorkIdentifier(loaded, INDEX, cfg.identify)
    latency = []  # a query as served: decode + resample + CQT + embed + search, on the test performances
    test_rows = [json.loads(line) for line in (SPLITS / "test.jsonl").read_text().splitlines()]
    for row in test_rows[:LATENCY_QUERIES]:
        began = time.perf_counter()
        identifier.identify_path(INGESTED / row["path"])
        latency.append((time.perf_counter() - began) * 1000)
    logged = sections(params, "features", "model", "train", "evaluate", "identify")
    with stage_run("works-evaluate", params.tracking, logged, signature=loaded.signature,
                   parent_stage="works-train", family="works") as run:
        with atomic_dir(EVAL_REPORT) as staging:
            summary = write_evaluation(staging, perf, embeddings, list(cfg.evaluate.testsets), loaded.signature,
                                       latency, cfg.evaluate.tsne, cfg.identify.rerank, loaded.features.bins_per_octave)
        run.log_metrics(flat_metrics(summary["testsets"]) | {"latency_p50_ms": summary["latency_ms"]["p50"],
                                                             "latency_p95_ms": summary["latency_ms"]["p95"]})
        for name in ("metrics.json", "tsne.png"):
            run.log_artifact(EVAL_REPORT / name, "reports/eval")
    print(format_table(summary))


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"{'test set':<14}{'queries':>8}{'mAP':>8}{'MR1':>8}{'top-1':>8}{'top-10':>8}"]
    for name, m in summary["testsets"].items():
        cells = [m.get(k) for k in ("mAP", "MR1", "top1", "top10")]
        lines.append(f"{name:<14}{m.get('queries', 0):>8}" + "".join(
            f"{'–':>8}" if c is None else f"{c:>8.3f}" for c in cells))
        if "embedding_only" in m:
            first = m["embedding_only"]
            lines.append(f"{'  embedding':<14}{'':>8}" + "".join(f"{first[k]:>8.3f}" for k in ("mAP", "MR1", "top1", "top10")))
    lines.append(f"latency p50 {summary['latency_ms']['p50']:.0f} ms / p95 {summary['latency_ms']['p95']:.0f} ms per query")
    return "\n".join(lines)


def summary_metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    from musicid.families.works.evaluate import flat_metrics

    return flat_metrics(evaluation["testsets"]) | {"latency_p50_ms": evaluation["latency_ms"]["p50"],
                                                   "latency_p95_ms": evaluation["latency_ms"]["p95"]}


def report(params: Params, workers: int | None = None) -> None:
    """Model card, benchmark report and release checklist; then register the model (alias candidate)."""
    from musicid.families.works.io import load_model
    from musicid.families.works.release import benchmark_report, model_card
    from musicid.release import checklist, folder_bytes, gate_rows, peak_memory_mb
    from musicid.tracking import data_version, stage_run

    cfg = params.works
    loaded = load_model(MODEL, cfg.index.device)
    model, evaluation = read_json(MODEL / "config.json"), read_json(EVAL_REPORT / "metrics.json")
    train_metrics, feature_summary = read_json(TRAIN_REPORT / "metrics.json"), read_json(SHARDS / "summary.json")
    index_meta, split_summary = read_json(INDEX / "meta.json"), read_json(SPLITS / "summary.json")
    with (TRAIN_REPORT / "history.csv").open() as handle:
        seconds = sum(float(r.get("seconds") or 0) for r in csv.DictReader(handle))
    import numpy as np

    began = time.perf_counter()
    loaded.embed_frames(np.zeros((loaded.spec.min_frames * 4, loaded.spec.n_bins), np.float32))
    resources = {"model_size_mb": (MODEL / "model.pt").stat().st_size / 1e6, "peak_memory_mb": peak_memory_mb(),
                 "embed_ms_16s": (time.perf_counter() - began) * 1000}
    metrics = summary_metrics(evaluation) | resources
    rows = gate_rows(metrics, cfg.registry.gates)
    rows.append(("index built with this model", index_meta.get("model_signature") == loaded.signature,
                 f"index {index_meta.get('model_signature')} / model {loaded.signature}"))
    rows.append(("evaluation ran this model", evaluation.get("model_signature") == loaded.signature,
                 f"eval {evaluation.get('model_signature')}"))
    rows.append(("feature stores leak nothing (speed copies in train only)", bool(feature_summary["leakage"]["ok"]),
                 ", ".join(feature_summary["leakage"]["checked"])))
    version = data_version("works")
    rows.append(("training data version locked in dvc.lock", bool(version), version or "missing"))
    text, ready = checklist(cfg.registry.model_name, loaded.signature, rows, cfg.registry.champion_alias)
    documents = {
        LAYOUT.model_card: model_card(params, model, train_metrics, evaluation, split_summary, feature_summary,
                                      index_meta, version),
        LAYOUT.benchmark_report: benchmark_report(params, model, evaluation, feature_summary, index_meta,
                                                  folder_bytes(INDEX), resources, seconds),
        LAYOUT.release_checklist: text,
    }
    for path, body in documents.items():
        with atomic_file(path) as tmp:
            tmp.write_text(body)
    print(f"works-report: {', '.join(map(str, documents))}; release checklist: {'READY' if ready else 'NOT READY'}")
    with stage_run("works-report", params.tracking, sections(params, "registry"), signature=loaded.signature,
                   parent_stage="works-train", family="works") as run:
        run.log_metrics(metrics)
        for path in documents:
            run.log_artifact(path, "reports")
        run.log_artifact(TRAIN_REPORT / "curves.png", "reports/train")
        if (EVAL_REPORT / "tsne.png").is_file():
            run.log_artifact(EVAL_REPORT / "tsne.png", "reports/eval")
        if run.run is not None:
            register(params, metrics, run.run.data.tags)
    if not params.tracking.enabled:
        print("works-report: tracking.enabled is false: model not registered")


def register(params: Params, metrics: dict[str, float], run_tags: dict[str, str]) -> str:
    """Register models/works (+ data/index/works) inside the active run, alias candidate; the version."""
    import tempfile
    from pathlib import Path

    from musicid.families.works import pyfunc_entry
    from musicid.tracking import register_bundle
    from musicid.tracking.selfcheck import clip_or_none, cut_clip

    cfg = params.works
    tags = {k: v for k, v in run_tags.items() if k.startswith("musicid.")}

    def first_performance() -> Path:
        catalog = {t["track_id"]: t for t in read_json(CATALOG)["tracks"]}
        return INGESTED / catalog[read_json(INDEX / "refs.json")[0]["ref"]]["path"]

    with tempfile.TemporaryDirectory() as scratch:  # known answer: the first indexed performance (its first 30 s)
        clip = clip_or_none(lambda: cut_clip(first_performance(), Path(scratch) / "selfcheck", start_s=0.0, seconds=30.0),
                            "the first indexed performance")
        version, is_new = register_bundle(MODEL, INDEX, metrics, cfg.registry, {"identify": cfg.identify.model_dump()},
                                          tags, pyfunc_entry.__file__, cfg.identify.top, known_answer_clip=clip)
    print(f"registry: {cfg.registry.model_name} version {version} "
          f"{'registered' if is_new else 'already registered (same model + index)'}, "
          f"alias @{cfg.registry.candidate_alias} → {version}")
    return version


def register_workspace(params: Params) -> str:
    from musicid.tracking.workspace import register_workspace as register_it

    return register_it("works", params.tracking, sections(params, "registry"), MODEL, EVAL_REPORT, INDEX,
                       summary_metrics, lambda metrics, tags: register(params, metrics, tags))


STAGES = {"split": split, "features": features, "train": train, "index": index, "evaluate": evaluate, "report": report,
          "train-prod": train_prod}
