"""The pitch family's DVC stages (`musicid stage pitch-<name>`): thin, over the family's library."""

from __future__ import annotations

import time
from typing import Any

from musicid.config import Params
from musicid.fsutil import atomic_dir, atomic_file, read_json, write_json
from musicid.layout import family_layout

LAYOUT = family_layout("pitch")
SHARDS, MODEL = LAYOUT.shards, LAYOUT.model
TRAIN_REPORT, EVAL_REPORT, CHECKPOINTS = LAYOUT.train_report, LAYOUT.eval_report, LAYOUT.checkpoints


def sections(params: Params, *names: str) -> dict[str, Any]:
    return {name: getattr(params.pitch, name).model_dump() for name in names}


SYNTH_TIMING = LAYOUT.reports / "synth.json"  # how long generation took: apart from the stores, which stay byte-identical


def synth(params: Params, workers: int | None = None) -> None:
    """Generate the sanity and polyphonic sets (train/val/test) into data/shards/pitch/.

    The stores and their summary.json depend only on pitch.synth (the same params give the same
    bytes, so DVC's hash is stable); timings go to reports/pitch/synth.json.
    """
    from musicid.data.ingest import default_workers
    from musicid.families.pitch.generate import SETS, build_set
    from musicid.store import store_summary

    cfg = params.pitch.synth
    summary: dict[str, Any] = {"sets": {}}
    timing: dict[str, Any] = {"sets": {}}
    began = time.perf_counter()
    with atomic_dir(SHARDS) as staging:
        for kind in SETS:
            for split in ("train", "val", "test"):
                name = f"{kind}-{split}"
                t0 = time.perf_counter()
                built = build_set(cfg, kind, split, staging / f"{name}.zarr", workers=workers or default_workers())
                seconds = time.perf_counter() - t0
                store = store_summary(staging / f"{name}.zarr")
                summary["sets"][name] = built | {"bytes": store["bytes"], "direct_read": store["direct_read"]}
                rate = round(built["rows"] / seconds, 1) if seconds else 0.0
                timing["sets"][name] = {"rows": built["rows"], "seconds": round(seconds, 2), "windows_per_s": rate}
                print(f"pitch-synth: {name}: {built['rows']} windows in {seconds:.1f} s ({rate:.0f}/s), "
                      f"{store['bytes'] / 1e6:.1f} MB")
        write_json(staging / "summary.json", summary)
    timing["seconds"], timing["workers"] = round(time.perf_counter() - began, 2), workers or default_workers()
    write_json(SYNTH_TIMING, timing)
    print(f"pitch-synth: {sum(s['rows'] for s in summary['sets'].values())} windows → {SHARDS}")


NOTES_REPORT = LAYOUT.reports / "notes.json"  # the labelled window stores: tracks, windows, quarantine, timings
RENDER_TIMING = LAYOUT.reports / "notes-render.json"


def notes_render(params: Params, workers: int | None = None) -> None:
    """Render each labelled source (synthetic composer, Bach chorales) into data/labelled/pitch/<source>/:
    audio/<track>.flac, labels/<track>.mid (the note labels), tracks.csv. An unlisted source is left empty."""
    from musicid.data.ingest import default_workers
    from musicid.families.pitch.labelled import SOURCES, render_source, write_tracks

    cfg = params.pitch_notes
    summary: dict[str, Any] = {}
    for source in SOURCES:
        with atomic_dir(LAYOUT.labelled / source) as staging:
            if source in cfg.sources:
                t0 = time.perf_counter()
                summary[source] = render_source(source, cfg, staging, workers or default_workers())
                write_json(staging / "summary.json", summary[source])  # no timings: same params, same bytes
                summary[source]["seconds"] = round(time.perf_counter() - t0, 1)
            else:
                write_tracks(staging, [])
        if source in summary:
            splits = summary[source]["splits"]
            print(f"pitch-notes-render: {source}: " + ", ".join(
                f"{k} {v['tracks']} tracks / {v['pieces']} pieces / {v['hours']:.2f} h / {v['notes']} notes"
                for k, v in splits.items()) + f" ({summary[source]['seconds']:.0f} s)")
            for skip in summary[source]["skipped_scores"]:
                print(f"pitch-notes-render: skipped {skip['file']}: {skip['reason']}")
    write_json(RENDER_TIMING, {s: {"tracks": v["tracks"], "seconds": v["seconds"]} for s, v in summary.items()})


def notes_shards(params: Params, workers: int | None = None) -> None:
    """Cut every labelled source × split into a window store of frames with onset / frame / velocity
    targets (data/shards/pitch-notes/<source>-<split>.zarr); tracks that do not read are quarantined."""
    from musicid.families.pitch.frames import build_frames_set
    from musicid.families.pitch.labelled import SOURCES, SPLITS

    cfg = params.pitch_notes
    report: dict[str, Any] = {"sets": {}}
    for source in SOURCES:
        for split in SPLITS:
            name = f"{source}-{split}"
            t0 = time.perf_counter()
            built = build_frames_set(cfg, LAYOUT.labelled / source, source, split, LAYOUT.note_shards / f"{name}.zarr")
            built["seconds"] = round(time.perf_counter() - t0, 2)
            report["sets"][name] = built
            print(f"pitch-notes-shards: {name}: {built['tracks']} tracks → {built['rows']} windows"
                  + (f", {built['notes_dropped']} notes out of range or past max_notes" if built["notes_dropped"] else "")
                  + (f", {len(built['quarantined'])} quarantined" if built["quarantined"] else ""))
            for q in built["quarantined"]:
                print(f"pitch-notes-shards: quarantined {q['track']}: {q['reason']}")
    write_json(NOTES_REPORT, report)


def _train_network(params: Params, kind: str) -> None:
    from musicid.families.pitch.notetrain import train_notenet
    from musicid.tracking import TAG_SIGNATURE, stage_run

    cfg = getattr(params, f"pitch_{kind}")
    report_dir = LAYOUT.reports / f"{kind}-train"
    with stage_run(f"pitch-{kind}-train", params.tracking, {"notes": params.pitch_notes.model_dump(), kind: cfg.model_dump(),
                                                                "deterministic": params.train.deterministic},
                   system_metrics=params.tracking.system_metrics, family="pitch") as run:
        with atomic_dir(report_dir) as report:
            result = train_notenet(kind, LAYOUT.note_shards, params.pitch_notes, cfg, LAYOUT.network(kind), report,
                                   LAYOUT.checkpoints.parent / f"pitch-{kind}", log_epoch=run.log_epoch,
                                   deterministic=params.train.deterministic)
        run.set_tags({TAG_SIGNATURE: result.signature})
        run.log_metrics({"best_epoch": result.best_epoch, "best_eval_f1": result.best["eval_f1"],
                         "best_train_f1": result.best["train_f1"], "epochs_run": len(result.history)})
        run.log_artifact(report_dir, f"reports/{kind}-train")
    print(f"pitch-{kind}-train: best epoch {result.best_epoch} (eval F1 {result.best['eval_f1']:.3f}, "
          f"train F1 {result.best['train_f1']:.3f}), signature {result.signature} → {LAYOUT.network(kind)}")


def onset_train(params: Params, workers: int | None = None) -> None:
    """The onset network on the labelled stores (pitch_onset): per-epoch frame P/R/F1 on train and eval."""
    _train_network(params, "onset")


def frame_train(params: Params, workers: int | None = None) -> None:
    """The frame (pitch) network on the labelled stores (pitch_frame)."""
    _train_network(params, "frame")


def train_prod(params: Params, workers: int | None = None) -> None:
    """Production onset + frame networks on every train and val track (test tracks held out): per
    network K-fold, then a final run (resumable); models/pitch-prod/<network>/."""
    from musicid.families.pitch.prod import train_transcriber_prod
    from musicid.tracking.prod import run_prod_stage

    networks = {kind: getattr(params, f"pitch_{kind}") for kind in params.pitch_prod.networks}
    logged = {"notes": params.pitch_notes.model_dump(), "prod": params.pitch_prod.model_dump(),
              **{kind: cfg.model_dump() for kind, cfg in networks.items()}}

    def train(run: Any, report: Any) -> dict[str, Any]:
        with atomic_dir(LAYOUT.prod_model) as model_out:  # both networks are published together, or neither
            return train_transcriber_prod(LAYOUT.note_shards, LAYOUT.labelled, params.pitch_notes, networks,
                                          params.pitch_prod, model_out, report, LAYOUT.prod_state, run=run,
                                          deterministic=params.train.deterministic)

    run_prod_stage("pitch", params, logged, train)


TRANSCRIBE_REPORT = LAYOUT.reports / "transcribe"
NETWORK_KINDS = ("onset", "frame")


def transcriber_params(params: Params) -> dict[str, Any]:
    """Every hyperparameter behind a transcription: what `musicid pitch records` lists per run."""
    return {"notes": params.pitch_notes.model_dump(), "onset": params.pitch_onset.model_dump(),
            "frame": params.pitch_frame.model_dump(), "transcribe": params.pitch_transcribe.model_dump(exclude={"registry"})}


def transcribe_evaluate(params: Params, workers: int | None = None) -> None:
    """Both networks + post-processing on the whole test pieces: mir_eval note P/R/F1, frame-level P/R/F1.

    The run records every hyperparameter (both networks', the post-processing) and the networks'
    best train/eval frame P/R/F1 beside the test figures: one run is one row of `musicid pitch records`.
    """
    from musicid.families.pitch.transcribe import load_transcriber
    from musicid.families.pitch.transcribe_eval import (evaluate_transcriber, flat_metrics, format_table, network_metrics,
                                                        tuning_metrics)
    from musicid.tracking import stage_run

    cfg = params.pitch_transcribe
    tr = load_transcriber(LAYOUT.network("onset"), LAYOUT.network("frame"), cfg.device, params.pitch_notes.window_frames)
    thresholds = {"onset": params.pitch_onset.threshold, "frame": params.pitch_frame.threshold}
    networks = {kind: read_json(LAYOUT.reports / f"{kind}-train" / "metrics.json") for kind in NETWORK_KINDS}
    with stage_run("pitch-transcribe-evaluate", params.tracking, transcriber_params(params),
                   signature=tr.signature, family="pitch") as run:
        with atomic_dir(TRANSCRIBE_REPORT) as staging:
            summary = evaluate_transcriber(tr, LAYOUT.labelled, params.pitch_notes, cfg, thresholds, staging)
            summary["networks"] = networks
            write_json(staging / "metrics.json", summary)
        run.log_metrics(flat_metrics(summary) | network_metrics(networks) | tuning_metrics(summary))
        run.log_artifact(TRANSCRIBE_REPORT, "reports/transcribe")
    print(format_table(summary))


TRANSCRIBER = "transcriber"


def transcribe_report(params: Params, workers: int | None = None) -> None:
    """The transcriber's card and release checklist; then register both networks + post-processing as
    musicid-transcriber (alias candidate)."""
    from musicid.families.pitch.release import transcriber_card
    from musicid.families.pitch.transcribe import load_transcriber
    from musicid.families.pitch.transcribe_eval import flat_metrics, network_metrics
    from musicid.release import checklist, folder_bytes, gate_rows, peak_memory_mb
    from musicid.tracking import data_version, stage_run

    cfg = params.pitch_transcribe
    tr = load_transcriber(LAYOUT.network("onset"), LAYOUT.network("frame"), cfg.device, params.pitch_notes.window_frames)
    evaluation = read_json(TRANSCRIBE_REPORT / "metrics.json")
    size_mb = sum(folder_bytes(LAYOUT.network(kind)) for kind in NETWORK_KINDS) / 1e6
    metrics = flat_metrics(evaluation) | network_metrics(evaluation["networks"]) | {
        "model_size_mb": size_mb, "peak_memory_mb": peak_memory_mb()}
    rows = gate_rows(metrics, cfg.registry.gates)
    evaluated = evaluation.get("signatures", {})
    rows.append(("evaluation ran these networks", [evaluated.get(k) for k in NETWORK_KINDS] == list(tr.signatures),
                 f"eval {evaluated.get('onset')} + {evaluated.get('frame')}"))
    post = evaluation.get("post_processing", {})
    expected = cfg.post_processing() | ((evaluation.get("tuning") or {}).get("chosen", {}) if cfg.tune.enabled else {})
    rows.append(("evaluated post-processing is the configured one" + (" (thresholds tuned on validation)" if cfg.tune.enabled else ""),
                 post == expected, ", ".join(f"{k} {v:g}" for k, v in post.items())))
    version = data_version("pitch", output=str(LAYOUT.note_shards))
    rows.append(("training data version locked in dvc.lock", bool(version), version or "missing"))
    text, ready = checklist(cfg.registry.model_name, tr.signature, rows, cfg.registry.champion_alias)
    documents = {LAYOUT.named_model_card(TRANSCRIBER): transcriber_card(params, tr.signature, evaluation, version),
                 LAYOUT.named_release_checklist(TRANSCRIBER): text}
    for path, body in documents.items():
        with atomic_file(path) as tmp:
            tmp.write_text(body)
    print(f"pitch-transcribe-report: {', '.join(map(str, documents))}; release checklist: {'READY' if ready else 'NOT READY'}")
    with stage_run("pitch-transcribe-report", params.tracking, {"registry": cfg.registry.model_dump()},
                   signature=tr.signature, parent_stage="pitch-transcribe-evaluate", family="pitch") as run:
        run.log_metrics(metrics)
        for path in documents:
            run.log_artifact(path, "reports")
        if run.run is not None:
            register_transcriber(params, tr.signature, metrics, run.run.data.tags, post)
    if not params.tracking.enabled:
        print("pitch-transcribe-report: tracking.enabled is false: transcriber not registered")


def register_transcriber(params: Params, signature: str, metrics: dict[str, float], run_tags: dict[str, str],
                         post: dict[str, Any]) -> str:
    """Register the onset network (artifact `model`) + frame network (`frame`) + the post-processing it was
    evaluated with (`post`: tuned on validation, or params'); the version."""
    import tempfile
    from pathlib import Path

    from musicid.families.pitch import pyfunc_transcriber_entry
    from musicid.families.pitch.records import TAG_EVAL_RUN
    from musicid.tracking import register_bundle
    from musicid.tracking.selfcheck import tone_clip

    cfg = params.pitch_transcribe
    tags = {k: v for k, v in run_tags.items() if k.startswith("musicid.")}
    if run_tags.get("mlflow.parentRunId"):
        tags[TAG_EVAL_RUN] = run_tags["mlflow.parentRunId"]
    settings = {"transcribe": post, "window_frames": params.pitch_notes.window_frames}
    with tempfile.TemporaryDirectory() as scratch:  # known answer: a plucked A4 (the notes it gives are recorded)
        version, is_new = register_bundle(LAYOUT.network("onset"), None, metrics, cfg.registry, settings, tags,
                                          pyfunc_transcriber_entry.__file__, 1, extra={"frame": LAYOUT.network("frame")},
                                          signature=signature, known_answer_clip=tone_clip(Path(scratch) / "selfcheck"))
    print(f"registry: {cfg.registry.model_name} version {version} "
          f"{'registered' if is_new else 'already registered (same networks and post-processing)'}, "
          f"alias @{cfg.registry.candidate_alias} → {version}")
    return version


def train(params: Params, workers: int | None = None) -> None:
    from musicid.families.pitch.train import train_pitch
    from musicid.tracking import TAG_SIGNATURE, stage_run

    cfg = params.pitch
    with stage_run("pitch-train", params.tracking, sections(params, "synth", "model", "train") | {"deterministic": params.train.deterministic},
                   system_metrics=params.tracking.system_metrics, family="pitch") as run:
        with atomic_dir(TRAIN_REPORT) as report:
            result = train_pitch(SHARDS, cfg.synth, cfg.model, cfg.train, MODEL, report, CHECKPOINTS,
                                 cfg.evaluate.tolerance_cents, log_epoch=run.log_epoch,
                                 deterministic=params.train.deterministic)
        run.set_tags({TAG_SIGNATURE: result.signature})
        run.log_metrics({"best_epoch": result.best_epoch, "best_val_loss": result.best["val_loss"],
                         "epochs_run": len(result.history)})
        run.log_artifact(TRAIN_REPORT, "reports/train")
        run.log_artifact(MODEL / "config.json", "model")
    print(f"pitch-train: best epoch {result.best_epoch} (val loss {result.best['val_loss']:.4f}), "
          f"signature {result.signature} → {MODEL}")


def evaluate(params: Params, workers: int | None = None) -> None:
    from musicid.families.pitch.evaluate import evaluate_model, flat_metrics
    from musicid.families.pitch.metrics import format_table
    from musicid.families.pitch.io import load_model
    from musicid.tracking import stage_run

    cfg = params.pitch
    loaded = load_model(MODEL, cfg.train.device)
    with stage_run("pitch-evaluate", params.tracking, sections(params, "synth", "model", "train", "evaluate"),
                   signature=loaded.signature, parent_stage="pitch-train", family="pitch") as run:
        with atomic_dir(EVAL_REPORT) as staging:
            summary = evaluate_model(loaded, SHARDS, cfg.synth, cfg.evaluate, staging)
        run.log_metrics(flat_metrics(summary))
        for name in ("metrics.json", "errors.png"):
            if (EVAL_REPORT / name).is_file():
                run.log_artifact(EVAL_REPORT / name, "reports/eval")
    print(format_table(summary))


def summary_metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    from musicid.families.pitch.evaluate import flat_metrics

    return flat_metrics(evaluation)


def report(params: Params, workers: int | None = None) -> None:
    """Model card and release checklist; then register the model (alias candidate)."""
    from musicid.families.pitch.io import load_model
    from musicid.families.pitch.release import model_card
    from musicid.release import checklist, gate_rows, peak_memory_mb
    from musicid.tracking import data_version, stage_run

    cfg = params.pitch
    loaded = load_model(MODEL, cfg.train.device)
    model, evaluation = read_json(MODEL / "config.json"), read_json(EVAL_REPORT / "metrics.json")
    train_metrics, synth_timing = read_json(TRAIN_REPORT / "metrics.json"), read_json(SYNTH_TIMING)
    metrics = summary_metrics(evaluation) | {"model_size_mb": (MODEL / "model.pt").stat().st_size / 1e6,
                                             "peak_memory_mb": peak_memory_mb()}
    rows = gate_rows(metrics, cfg.registry.gates)
    rows.append(("evaluation ran this model", evaluation.get("model_signature") == loaded.signature,
                 f"eval {evaluation.get('model_signature')}"))
    version = data_version("pitch")
    rows.append(("training data version locked in dvc.lock", bool(version), version or "missing"))
    text, ready = checklist(cfg.registry.model_name, loaded.signature, rows, cfg.registry.champion_alias)
    documents = {LAYOUT.model_card: model_card(params, model, train_metrics, evaluation, synth_timing, version),
                 LAYOUT.release_checklist: text}
    for path, body in documents.items():
        with atomic_file(path) as tmp:
            tmp.write_text(body)
    print(f"pitch-report: {', '.join(map(str, documents))}; release checklist: {'READY' if ready else 'NOT READY'}")
    with stage_run("pitch-report", params.tracking, sections(params, "registry"), signature=loaded.signature,
                   parent_stage="pitch-train", family="pitch") as run:
        run.log_metrics(metrics)
        for path in documents:
            run.log_artifact(path, "reports")
        if run.run is not None:
            register(params, metrics, run.run.data.tags)
    if not params.tracking.enabled:
        print("pitch-report: tracking.enabled is false: model not registered")


def register(params: Params, metrics: dict[str, float], run_tags: dict[str, str]) -> str:
    """Register models/pitch inside the active run, alias candidate; the version."""
    import tempfile
    from pathlib import Path

    from musicid.families.pitch import pyfunc_entry
    from musicid.tracking import register_bundle
    from musicid.tracking.selfcheck import tone_clip

    cfg = params.pitch
    tags = {k: v for k, v in run_tags.items() if k.startswith("musicid.")}
    with tempfile.TemporaryDirectory() as scratch:  # known answer: a plucked A4 (its pitches are recorded)
        version, is_new = register_bundle(MODEL, None, metrics, cfg.registry, {"predict": cfg.predict.model_dump()},
                                          tags, pyfunc_entry.__file__, 1, known_answer_clip=tone_clip(Path(scratch) / "selfcheck"))
    print(f"registry: {cfg.registry.model_name} version {version} "
          f"{'registered' if is_new else 'already registered (same model)'}, alias @{cfg.registry.candidate_alias} → {version}")
    return version


def register_workspace(params: Params) -> str:
    from musicid.tracking.workspace import register_workspace as register_it

    return register_it("pitch", params.tracking, sections(params, "registry"), MODEL, EVAL_REPORT, None,
                       summary_metrics, lambda metrics, tags: register(params, metrics, tags))


STAGES = {"synth": synth, "notes-render": notes_render, "notes-shards": notes_shards,
          "onset-train": onset_train, "frame-train": frame_train, "transcribe-evaluate": transcribe_evaluate,
          "transcribe-report": transcribe_report, "train-prod": train_prod,
          "train": train, "evaluate": evaluate, "report": report}
