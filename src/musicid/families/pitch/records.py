"""Tuning records of the transcriber: one row per `pitch-transcribe-evaluate` run, read from MLflow.

Each such run logs every hyperparameter behind it (both networks' and the post-processing) and the
networks' best-epoch frame P/R/F1 on train and eval beside the test note scores, so a sweep of
`dvc exp run --queue -S ...` experiments becomes this table without sorting any CSV. Rows are
sorted by the test note F1 (onset only) of one labelled set; the registered champion's row is
marked. Re-runs of the same networks with the same post-processing fold into the newest.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from musicid.config import RegistryConfig, TrackingConfig

STAGE = "pitch-transcribe-evaluate"
TAG_EVAL_RUN = "musicid.eval_run"  # on a registered transcriber: the evaluation run it was measured in
HYPERPARAMS = (  # (MLflow param, column)
    ("onset.pos_weight", "onset pos_weight"), ("onset.conv_l2", "onset conv L2"), ("onset.fc_l2", "onset fc L2"),
    ("onset.context_frames", "onset context"), ("onset.n_fft", "onset n_fft"), ("onset.channels", "onset channels"),
    ("onset.lstm_hidden", "onset LSTM"), ("onset.epochs", "onset epochs"),
    ("frame.pos_weight", "frame pos_weight"), ("frame.conv_l2", "frame conv L2"), ("frame.fc_l2", "frame fc L2"),
    ("frame.context_frames", "frame context"), ("frame.epochs", "frame epochs"),
    ("transcribe.onset_threshold", "onset thr"), ("transcribe.frame_threshold", "frame thr"),
    ("transcribe.min_note_s", "min note s"),
)
POST_PROCESSING_PARAMS = ("transcribe.onset_threshold", "transcribe.frame_threshold", "transcribe.adjacent_time_s",
                          "transcribe.min_note_s")
PRF = ("precision", "recall", "f1")
TUNED_VAL_F1 = "tuned_val_note_f1"  # the evaluation's validation note F1 at the thresholds it tuned (not a test set)


def tuned_metric(name: str) -> str:
    """The MLflow metric holding the value the evaluation tuned for post-processing key `name`."""
    return f"tuned_{name}"


@dataclass
class Record:
    run_id: str
    name: str
    started_ms: int
    signature: str
    params: dict[str, str]
    metrics: dict[str, float]
    champion: bool = False

    def metric(self, key: str) -> float | None:
        return self.metrics.get(key)

    def param(self, key: str) -> str:
        value = effective_param(self.params, self.metrics, key)
        return "–" if value is None else value


def effective_param(params: dict[str, str], metrics: dict[str, float], key: str) -> str | None:
    """A logged hyperparameter; a post-processing threshold the run tuned on validation reads as tuned
    (the `tuned_<name>` metric), since that, not the param it was given, is what it evaluated."""
    tuned = metrics.get(tuned_metric(key.removeprefix("transcribe."))) if key.startswith("transcribe.") else None
    return f"{tuned:g}" if tuned is not None else params.get(key)


def _runs(tracking: TrackingConfig) -> list[Any]:
    import mlflow

    from musicid.tracking.runs import TAG_STAGE, configure, tracking_errors

    configure(must_exist=True)
    with tracking_errors("cannot read the transcription runs"):
        experiment = mlflow.get_experiment_by_name(f"{tracking.experiment}-pitch")
        if experiment is None:
            return []
        return mlflow.search_runs([experiment.experiment_id], output_format="list", order_by=["attributes.start_time DESC"],
                                  filter_string=f"tags.`{TAG_STAGE}` = '{STAGE}' and attributes.status = 'FINISHED'")


def _champion_run(registry: RegistryConfig) -> tuple[str | None, str]:
    """(the champion's evaluation run id, what to say about it)."""
    from musicid.tracking import TrackingError, get_version

    try:
        info = get_version(registry.model_name, registry.champion_alias)
    except TrackingError:
        return None, f"no {registry.model_name}@{registry.champion_alias} yet"
    return info.tags.get(TAG_EVAL_RUN), f"* = {registry.model_name}@{registry.champion_alias} (version {info.version})"


def collect(tracking: TrackingConfig, registry: RegistryConfig) -> tuple[list[Record], int, str]:
    """(records newest first, runs folded as repeats, the champion note)."""
    from musicid.tracking.runs import TAG_DVC_EXP, TAG_SIGNATURE

    champion, note = _champion_run(registry)
    records, seen, folded = [], set(), 0
    for run in _runs(tracking):
        params = dict(run.data.params)
        key = (run.data.tags.get(TAG_SIGNATURE, ""),
               *(effective_param(params, run.data.metrics, p) for p in POST_PROCESSING_PARAMS))
        if key in seen and run.info.run_id != champion:
            folded += 1
            continue
        seen.add(key)
        name = run.data.tags.get(TAG_DVC_EXP) or (run.info.run_name or run.info.run_id[:8]).removeprefix(f"{STAGE} ")
        records.append(Record(run.info.run_id, name, int(run.info.start_time or 0), key[0], params,
                              {k: float(v) for k, v in run.data.metrics.items()}, run.info.run_id == champion))
    return records, folded, note


def default_set(records: list[Record]) -> str:
    sets = {k.split("_note_")[0] for r in records for k in r.metrics if "_note_onset_f1" in k}
    return "chorales" if "chorales" in sets or not sets else sorted(sets)[0]


def table_rows(records: list[Record], test_set: str) -> tuple[list[str], list[list[str]]]:
    """Headers and cells, sorted by the set's test note F1 (onset only), best first."""
    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    ranked = sorted(records, key=lambda r: (r.metric(f"{test_set}_note_onset_f1") or -1.0, r.started_ms), reverse=True)
    headers = ["", "run", *[h for _, h in HYPERPARAMS]]
    headers += [f"{kind} {split} {m[0].upper()}" for kind in ("onset", "frame") for split in ("train", "eval") for m in PRF]
    headers += ["val note F1 (tuning)"]
    headers += [f"test {test_set} note {m[0].upper()}" for m in PRF] + [f"test {test_set} on+off F1"]
    others = sorted({k.split("_note_")[0] for r in records for k in r.metrics if k.endswith("_note_onset_f1")} - {test_set})
    headers += [f"test {s} note F1" for s in others] + ["s / audio min", "signature"]
    rows = []
    for r in ranked:
        cells = ["*" if r.champion else "", r.name, *[r.param(p) for p, _ in HYPERPARAMS]]
        cells += [fmt(r.metric(f"{kind}_{split}_{m}")) for kind in ("onset", "frame") for split in ("train", "eval") for m in PRF]
        cells += [fmt(r.metric(TUNED_VAL_F1))]
        cells += [fmt(r.metric(f"{test_set}_note_onset_{m}")) for m in PRF] + [fmt(r.metric(f"{test_set}_note_onset_offset_f1"))]
        cells += [fmt(r.metric(f"{s}_note_onset_f1")) for s in others]
        speed = r.metric(f"{test_set}_seconds_per_audio_minute")
        cells += ["–" if speed is None else f"{speed:.2f}", r.signature]
        rows.append(cells)
    return headers, rows


def write_tables(headers: list[str], rows: list[list[str]], out_dir: Path, note: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv_path = out_dir / "records.md", out_dir / "records.csv"
    lines = ["# Transcription records (from MLflow; best test note F1 first)", "", note, "",
             "| " + " | ".join(h or "champion" for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    md.write_text("\n".join(lines) + "\n")
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["champion" if not h else h for h in headers])
        writer.writerows([["yes" if c == "*" else c for c in cells[:1]] + cells[1:] for cells in rows])
    return md, csv_path


def terminal_table(headers: list[str], rows: list[list[str]]) -> str:
    """A narrower view for the terminal: P/R/F1 triples in one cell each."""
    h = {name: i for i, name in enumerate(headers)}
    keep = ["", "run", *[c for _, c in HYPERPARAMS if not c.endswith("epochs")]]
    triples = [(f"{k} {s}", [f"{k} {s} {m}" for m in "PRF"]) for k in ("onset", "frame") for s in ("train", "eval")]
    test = next(x for x in headers if x.startswith("test ") and x.endswith(" note P"))[: -len(" note P")]
    triples.append((f"{test} note", [f"{test} note {m}" for m in "PRF"]))
    tail = [x for x in headers if x.endswith("on+off F1") or (x.startswith("test ") and x.endswith(" note F1"))] + ["s / audio min"]
    out_headers = keep + [t for t, _ in triples] + tail
    out_rows = [[c[h[k]] for k in keep] + ["/".join(c[h[x]] for x in cols) for _, cols in triples] + [c[h[x]] for x in tail]
                for c in rows]
    widths = [max(len(x), *(len(r[i]) for r in out_rows)) if out_rows else len(x) for i, x in enumerate(out_headers)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(out_headers, widths))]
    lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths)) for r in out_rows]
    return "\n".join(lines)
