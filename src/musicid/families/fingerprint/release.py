"""Release documents written by the `report` stage: model card, benchmark report, release checklist.

They are Markdown built only from pipeline artifacts (model config, train/eval metrics, index and
store summaries, dvc.lock), so they say exactly what the registered model is and how it measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from musicid.config import GatesConfig, Params
from musicid.families.fingerprint.queries import APART_CONDITIONS
from musicid.families.fingerprint.evaluate import key_metrics
from musicid.fsutil import read_json
from musicid.release import checklist, folder_bytes, gate_rows

WEAK_TOP1 = 0.5  # a condition below this at the longest query length is listed as a limitation


@dataclass
class ReleaseInputs:
    """Everything the documents are written from, read once from the pipeline's outputs."""

    params: Params
    model: dict[str, Any]          # models/fingerprint/config.json
    train: dict[str, Any]          # reports/fingerprint/train/metrics.json
    history: list[dict[str, str]]  # reports/fingerprint/train/history.csv rows
    evaluation: dict[str, Any]     # reports/fingerprint/eval/metrics.json
    index: dict[str, Any]          # data/index/fingerprint/meta.json
    index_bytes: int
    shards: dict[str, Any]         # data/shards/fingerprint/summary.json
    ingest: dict[str, Any]         # reports/ingest/inspect.json
    data_version: str
    manifests_ok: bool
    manifest_problems: list[str]

    @property
    def signature(self) -> str:
        return str(self.model["signature"])

    @property
    def metrics(self) -> dict[str, float]:
        return key_metrics(self.evaluation)

    @property
    def training_seconds(self) -> float:
        return sum(float(row.get("seconds", 0) or 0) for row in self.history)


def gather(params: Params, model_dir: Path, train_report: Path, eval_report: Path, index_dir: Path, shards_dir: Path,
           ingest_report: Path, manifests: Path, data_version: str) -> ReleaseInputs:
    import csv

    from musicid.data.splits import validate_manifests

    with (train_report / "history.csv").open() as handle:
        history = list(csv.DictReader(handle))
    validation = validate_manifests(manifests)
    return ReleaseInputs(
        params=params, model=read_json(model_dir / "config.json"), train=read_json(train_report / "metrics.json"),
        history=history, evaluation=read_json(eval_report / "metrics.json"), index=read_json(index_dir / "meta.json"),
        index_bytes=folder_bytes(index_dir), shards=read_json(shards_dir / "summary.json"),
        ingest=read_json(ingest_report / "inspect.json"), data_version=data_version,
        manifests_ok=bool(validation["ok"]), manifest_problems=list(validation.get("problems", [])),
    )


def measure_embedding_speed(loaded: Any, seconds: float = 60.0, hop_s: float = 0.5, repeats: int = 3) -> dict[str, float]:
    """Embedding throughput in × real time on this machine (best of a few runs over pink-ish noise)."""
    from musicid.families.fingerprint.io import embed_signal

    rate = loaded.spec.sample_rate
    signal = np.cumsum(np.random.default_rng(0).standard_normal(int(seconds * rate))).astype(np.float32)
    signal = (signal - signal.mean()) / (np.abs(signal).max() + 1e-9) * 0.5
    embed_signal(loaded, signal[: rate * 2], hop_s)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        embed_signal(loaded, signal, hop_s)
        best = min(best, time.perf_counter() - began)
    return {"audio_s": seconds, "seconds": round(best, 4), "x_realtime": round(seconds / best, 1), "device": str(loaded.device)}


def _lengths(evaluation: dict[str, Any]) -> list[str]:
    return sorted(evaluation["main"]["by_length"], key=lambda label: float(label.rstrip("s")))


def hit_table(evaluation: dict[str, Any]) -> list[str]:
    """Markdown table: top-1 per condition × length, then main top-1/top-5."""
    lengths = _lengths(evaluation)
    lines = ["| top-1 | " + " | ".join(lengths) + " |", "|---|" + "---|" * len(lengths)]
    for condition, cells in evaluation["by_condition"].items():
        label = f"{condition} (apart)" if condition in APART_CONDITIONS else condition
        lines.append(f"| {label} | " + " | ".join(f"{cells[l]['top1']:.3f}" for l in lengths) + " |")
    main = evaluation["main"]["by_length"]
    lines.append("| **main top-1** | " + " | ".join(f"**{main[l]['top1']:.3f}**" for l in lengths) + " |")
    lines.append("| main top-5 | " + " | ".join(f"{main[l]['top5']:.3f}" for l in lengths) + " |")
    lines.append("| queries per cell (main) | " + " | ".join(str(main[l]["n"]) for l in lengths) + " |")
    return lines


def limitations(inputs: ReleaseInputs) -> list[str]:
    """Limitations derived from the measurements, plus the ones that hold by design."""
    evaluation, found = inputs.evaluation, []
    longest = _lengths(evaluation)[-1]
    for condition, cells in evaluation["by_condition"].items():
        if cells[longest]["top1"] < WEAK_TOP1:
            found.append(f"Fails under **{condition}**: top-1 {cells[longest]['top1']:.3f} even at {longest} "
                         f"(spectral fingerprints are not {condition}-invariant; train with that augmentation if it matters).")
    for length in _lengths(evaluation):
        if evaluation["main"]["by_length"][length]["top1"] < 0.9:
            found.append(f"Short queries are less reliable: main top-1 {evaluation['main']['by_length'][length]['top1']:.3f} at {length}.")
    if "synthetic" in inputs.params.ingest.source:
        found.append("Trained and evaluated on the embedded **synthetic** music; measure real recordings with "
                     "`benchmarks/dev_music.sh` before relying on these figures.")
    found.append("Identifies recordings that are in the index (exact-recording search), not covers or other "
                 "performances of the same work.")
    found.append(f"Query audio is resampled to {inputs.model['spec']['sample_rate']} Hz mono; content above "
                 f"{inputs.model['spec']['f_max']:g} Hz is not used.")
    return found


def model_card(inputs: ReleaseInputs) -> str:
    spec, train_cfg, evaluation = inputs.model["spec"], inputs.model.get("train", {}), inputs.evaluation
    train_store = inputs.shards.get("train", {})
    lines = [
        f"# Model card: {inputs.params.fingerprint.registry.model_name}",
        "",
        f"- **Signature** `{inputs.signature}` (hash of network spec + weights; indexes built with it record it)",
        "- **Family** audio fingerprinter (segment embeddings + FAISS search + offset-consistent voting)",
        f"- **Training data version** `{inputs.data_version or 'not locked'}` (DVC hash of `data/shards` in dvc.lock)",
        "",
        "## Intended use",
        "",
        "Answer *which recording, and where in it* a short, possibly noisy clip comes from, against an index of",
        "reference recordings built with this exact model (`musicid index build`, `musicid identify`). Suited to",
        "broadcast/monitoring-style matching of known recordings. Not for cover/version identification,",
        "genre or similarity search, or identifying recordings that are not indexed.",
        "",
        "## Training data",
        "",
        f"- Source `{inputs.params.ingest.source}`: {inputs.ingest['files']['decodable']} usable tracks "
        f"({inputs.ingest['total_hours']:.2f} h, {inputs.ingest['works']} works), "
        f"{inputs.ingest['files']['quarantined']} quarantined.",
        "- Split by work (no work, track or identical audio in two splits): "
        + ", ".join(f"{split} {summary.get('tracks', '?')} tracks / {summary.get('rows', '?')} windows"
                    for split, summary in inputs.shards.items()) + ".",
        f"- Train store: {train_store.get('rows', '?')} windows of {inputs.params.fingerprint.shards.window_s:g} s at "
        f"{inputs.params.fingerprint.shards.sample_rate} Hz ({train_store.get('dtype', '?')}, {train_store.get('compressor', '?')}).",
        "",
        "## Model and training",
        "",
        f"- Log-mel front end ({spec['n_mels']} mels, {spec['f_min']:g}–{spec['f_max']:g} Hz, {spec['segment_s']:g} s segments), "
        f"separable conv channels {spec['channels']}, hidden {spec['hidden']}, **{spec['embedding_dim']}-d** L2-normalised embedding.",
        f"- NT-Xent (temperature {train_cfg.get('temperature', '?')}), batch {train_cfg.get('batch_size', '?')}, "
        f"lr {train_cfg.get('lr', '?')}, {inputs.train['epochs_run']} epochs × {train_cfg.get('steps_per_epoch', '?')} steps "
        f"({inputs.training_seconds:.0f} s); best epoch {inputs.train['best_epoch']}, val segment top-1 {inputs.train['val_top1']:.3f}"
        + (" (stopped early)" if inputs.train.get("stopped_early") else "") + ".",
        f"- Augmentations: noise {train_cfg.get('noise_kinds', [])} at {train_cfg.get('snr_db_min', '?')}–"
        f"{train_cfg.get('snr_db_max', '?')} dB SNR, reverb p={train_cfg.get('reverb_prob', '?')}, band-limit "
        f"p={train_cfg.get('bandlimit_prob', '?')}, codec p={train_cfg.get('codec_prob', '?')}, shift ≤ {train_cfg.get('max_shift_s', '?')} s.",
        "",
        "![training curves](train/curves.png)",
        "",
        "## Evaluation (held-out tracks the model never saw)",
        "",
        f"{evaluation['queries']} degraded queries; index of {inputs.index['n_refs']} references "
        f"({inputs.index['hours']:.2f} h, {inputs.index['kind']}, hop {inputs.index['hop_s']:g} s). "
        "Main conditions: noise, noise + reverb, codec + noise, telephone; speed and pitch are reported apart.",
        "",
        *hit_table(evaluation),
        "",
        f"Offset accuracy (±{inputs.params.fingerprint.evaluate.offset_tolerance_s:g} s, among top-1 hits): {evaluation['offset_accuracy']:.3f}. "
        f"Latency per query: p50 {evaluation['latency_ms']['p50']:.1f} ms, p95 {evaluation['latency_ms']['p95']:.1f} ms.",
        "",
        "![hit rate vs query length](eval/hit_rate.png)",
        "",
        "## Limitations",
        "",
        *[f"- {item}" for item in limitations(inputs)],
        "",
        "## Reproduce",
        "",
        "```",
        "dvc repro                       # rebuilds exactly this model from params.yaml + dvc.lock",
        "dvc pull models/fingerprint     # or fetch the pinned weights from the DVC remote",
        "```",
        "",
    ]
    return "\n".join(lines)


def benchmark_report(inputs: ReleaseInputs, speed: dict[str, float]) -> str:
    spec = inputs.model["spec"]
    evaluation, index = inputs.evaluation, inputs.index
    hours = max(float(index["hours"]), 1e-9)
    lines = [
        f"# Benchmark report: {inputs.params.fingerprint.registry.model_name} `{inputs.signature}`",
        "",
        "Figures from this pipeline run (speed measured by the `report` stage on this machine).",
        "",
        "| what | figure |",
        "|---|---|",
        f"| embedding throughput ({speed['device']}) | {speed['x_realtime']:g}× real time "
        f"({speed['audio_s']:g} s of audio in {speed['seconds']:.3f} s, hop {inputs.params.fingerprint.index.hop_s:g} s) |",
        f"| query latency p50 / p95 | {evaluation['latency_ms']['p50']:.1f} / {evaluation['latency_ms']['p95']:.1f} ms "
        f"({evaluation['queries']} queries, {', '.join(_lengths(evaluation))}) |",
        f"| index | {index['kind']}, {index['n_vectors']} vectors × {spec['embedding_dim']} d, {index['n_refs']} refs, {index['hours']:.2f} h |",
        f"| index size on disk | {inputs.index_bytes / 1e6:.2f} MB ({inputs.index_bytes / 1e6 / hours:.2f} MB per hour of audio) |",
        f"| training | {inputs.train['epochs_run']} epochs, "
        f"{inputs.training_seconds:.0f} s |",
    ]
    for split, summary in inputs.shards.items():
        lines.append(
            f"| shards {split} | {summary.get('rows')} windows, {summary.get('file_count')} files, "
            f"{summary.get('bytes', 0) / 1e6:.1f} MB ({summary.get('raw_bytes', 0) / 1e6:.1f} MB raw) |"
        )
    lines += ["", "Scaling to large catalogs: `benchmarks/index_scaling.py` (flat vs IVF-PQ, latency and memory vs size).", ""]
    return "\n".join(lines)


def release_checklist(inputs: ReleaseInputs, gates: GatesConfig) -> tuple[str, bool]:
    """Each release gate and consistency check with pass/fail and its figure; (markdown, all passed)."""
    rows = gate_rows(inputs.metrics, gates)
    rows.append(("index built with this model", inputs.index.get("model_signature") == inputs.signature,
                 f"index {inputs.index.get('model_signature')} / model {inputs.signature}"))
    rows.append(("evaluation ran this model", inputs.evaluation.get("model_signature") == inputs.signature,
                 f"eval {inputs.evaluation.get('model_signature')}"))
    rows.append(("no query failed to decode", inputs.evaluation.get("errors", 0) == 0, f"{inputs.evaluation.get('errors', 0)} errors"))
    rows.append(("splits leak nothing (musicid data validate)", inputs.manifests_ok,
                 "ok" if inputs.manifests_ok else "; ".join(inputs.manifest_problems[:3])))
    rows.append(("training data version locked in dvc.lock", bool(inputs.data_version), inputs.data_version or "missing"))
    registry = inputs.params.fingerprint.registry
    return checklist(registry.model_name, inputs.signature, rows, registry.champion_alias)
