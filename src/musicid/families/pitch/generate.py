"""The pitch-synth stage's library: generate the sanity and polyphonic sets into Zarr window stores.

Every row is made from its own seed (set, split, row), so a set is identical whatever the number of
workers. Work is cut into tasks of one shard each: workers render and compute targets, the parent
writes the shards in order through the spine's `ShardWriter` (waveform uncompressed, targets
compressed, per `pitch.synth`).

Per row: `waveform` (window_samples), `confidence` and `energy` (n_bins, float16), `notes`
(max_polyphony × NOTE_FIELDS, float32, the first `n_notes` rows used; see synth.NOTE_FIELDS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from musicid.config import PitchSynthConfig
from musicid.families.pitch.bins import BinScale
from musicid.families.pitch.synth import NOTE_FIELDS, Notes, draw_polyphonic, make_timbres, render_window, single_note, targets
from musicid.store.writer import ShardWriter, row_layout

SETS = ("sanity", "polyphonic")
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
TARGET_NAMES = ("confidence", "energy", "notes", "n_notes")


def scale_of(cfg: PitchSynthConfig) -> BinScale:
    return BinScale(cfg.n_bins, cfg.fmin_hz, cfg.fmax_hz)


def set_rows(cfg: PitchSynthConfig, kind: str, split: str) -> int:
    if kind == "sanity":
        return cfg.n_bins * cfg.samples_per_bin.get(split, 0)
    return cfg.polyphonic_windows.get(split, 0)


def row_notes(cfg: PitchSynthConfig, kind: str, split: str, row: int, scale: BinScale) -> Notes:
    """The notes of one row, from that row's own seed."""
    rng = np.random.default_rng([cfg.seed, SETS.index(kind), SPLIT_IDS[split], row])
    if kind == "sanity":  # row r holds bin r mod n_bins, at a frequency drawn inside the bin
        freq = float(scale.freq_of(row % cfg.n_bins + rng.uniform(-0.5, 0.5)))
        return single_note(rng, freq, cfg.n_timbres, cfg.window_samples, cfg.random_phase)
    return draw_polyphonic(rng, cfg.polyphony, cfg.n_timbres, cfg.window_samples, scale, cfg.random_phase)


def make_rows(cfg: PitchSynthConfig, kind: str, split: str, start: int, stop: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rows [start, stop) of a set: windows and their targets."""
    scale, timbres = scale_of(cfg), make_timbres(cfg.n_timbres, cfg.max_harmonics, cfg.seed)
    n, width = stop - start, cfg.max_polyphony
    windows = np.zeros((n, cfg.window_samples), np.float32)
    out = {"confidence": np.zeros((n, cfg.n_bins), np.float16), "energy": np.zeros((n, cfg.n_bins), np.float16),
           "notes": np.zeros((n, width, len(NOTE_FIELDS)), np.float32), "n_notes": np.zeros(n, np.int16)}
    for j in range(n):
        notes = row_notes(cfg, kind, split, start + j, scale)
        windows[j] = render_window(notes, timbres, cfg.window_samples, cfg.sample_rate)
        confidence, energy, table = targets(notes, timbres, scale, cfg.window_samples, cfg.sample_rate,
                                            cfg.energy_sigma_bins)
        out["confidence"][j], out["energy"][j] = confidence, energy
        out["notes"][j, : len(table)], out["n_notes"][j] = table, len(table)
    return windows, out


def _task(args: tuple[PitchSynthConfig, str, str, int, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return make_rows(*args)


def build_set(cfg: PitchSynthConfig, kind: str, split: str, out_path: Path, workers: int = 1) -> dict[str, Any]:
    """Write one set's store (atomically); returns its summary."""
    rows = set_rows(cfg, kind, split)
    per_task = row_layout(cfg).rows_per_shard
    tasks = [(cfg, kind, split, s, min(rows, s + per_task)) for s in range(0, rows, per_task)]
    attrs = {"set": kind, "split": split, "n_bins": cfg.n_bins, "fmin_hz": cfg.fmin_hz, "fmax_hz": cfg.fmax_hz,
             "note_fields": list(NOTE_FIELDS), "random_phase": cfg.random_phase, "seed": cfg.seed}
    with ShardWriter(out_path, cfg=cfg, attrs=attrs, required=()) as writer, \
            tqdm(total=rows, desc=f"pitch-synth: {kind}-{split}", unit="window") as bar:
        if workers > 1 and len(tasks) > 1:
            from musicid.parallel import process_pool

            with process_pool(min(workers, len(tasks))) as pool:
                for windows, values in pool.map(_task, tasks):
                    writer.add(windows, values)
                    bar.update(len(windows))
        else:
            for task in tasks:
                windows, values = _task(task)
                writer.add(windows, values)
                bar.update(len(windows))
    return {"set": kind, "split": split, "rows": rows, "shards": len(tasks)}
