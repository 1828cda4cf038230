"""Note labels → fixed windows of frames with per-frame targets, in the spine's Zarr window stores.

Frame *t* of a track covers samples [t·hop, (t+1)·hop) at `pitch_notes.sample_rate`. Per pitch *p*
(MIDI `min_midi + p`): **onset** is 1 for `onset_frames` frames from the one nearest the note's
onset (2 by default: 32 ms, as Onsets and Frames labels them); **frame** is 1 from
that frame until the frame nearest its offset (at least one frame); **velocity** holds the note's
velocity (0..1) at its onset frame. Notes outside the pitch range are dropped and counted.

A track is cut into consecutive windows of `window_frames` frames (the last zero-padded), so a
test piece's windows stitch back into the whole piece. Per row: `waveform` (window_frames · hop
samples), `onset` / `frame` (window_frames × n_pitches, uint8), `velocity` (float16), `notes`
(max_notes × [onset_s, offset_s, pitch, velocity], times from the row's start, `n_notes` used),
`track` (index into the store's `track_names` attribute) and `start_frame`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from musicid.config import PitchNotesConfig
from musicid.families.pitch.labelled import LABEL_FIELDS, SPLITS, LabelError, read_labels, read_tracks
from musicid.store.writer import ShardWriter

TARGET_NAMES = ("onset", "frame", "velocity", "notes", "n_notes", "track", "start_frame")


def frame_targets(notes: np.ndarray, n_frames: int, fps: float, min_midi: int, n_pitches: int, onset_frames: int = 1
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(onset, frame, velocity) arrays of shape (n_frames, n_pitches) and the count of notes out of range;
    an onset marks `onset_frames` frames from the note's start (within the note)."""
    onset = np.zeros((n_frames, n_pitches), np.uint8)
    frame = np.zeros((n_frames, n_pitches), np.uint8)
    velocity = np.zeros((n_frames, n_pitches), np.float16)
    dropped = 0
    for on_s, off_s, pitch, vel in np.asarray(notes, dtype=np.float64).reshape(-1, 4):
        p = int(pitch) - min_midi
        start = int(round(on_s * fps))
        if not 0 <= p < n_pitches or start >= n_frames:
            dropped += 1
            continue
        stop = min(n_frames, max(start + 1, int(round(off_s * fps))))
        frame[start:stop, p] = 1
        onset[start : min(stop, start + onset_frames), p] = 1
        velocity[start, p] = max(float(velocity[start, p]), vel)
    return onset, frame, velocity, dropped


def consecutive_windows(audio: np.ndarray, frame_hop: int, window_frames: int) -> tuple[np.ndarray, int]:
    """(rows × window_frames · frame_hop windows, back to back, the last zero-padded; the track's frame count)."""
    n_frames = max(1, -(-len(audio) // frame_hop))
    n_rows = -(-n_frames // window_frames)
    padded = np.zeros(n_rows * window_frames * frame_hop, np.float32)
    padded[: len(audio)] = audio
    return padded.reshape(n_rows, window_frames * frame_hop), n_frames


def track_rows(audio: np.ndarray, notes: np.ndarray, cfg: PitchNotesConfig, track_index: int) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """A whole track → its consecutive windows and their targets (and the notes dropped)."""
    width = cfg.window_frames
    windows, _ = consecutive_windows(audio, cfg.frame_hop, width)
    n_rows = len(windows)
    onset, frame, velocity, dropped = frame_targets(notes, n_rows * width, cfg.frames_per_s, cfg.min_midi, cfg.n_pitches,
                                                    cfg.onset_frames)
    out = {
        "onset": onset.reshape(n_rows, width, -1), "frame": frame.reshape(n_rows, width, -1),
        "velocity": velocity.reshape(n_rows, width, -1),
        "notes": np.zeros((n_rows, cfg.max_notes, len(LABEL_FIELDS)), np.float32),
        "n_notes": np.zeros(n_rows, np.int16), "track": np.full(n_rows, track_index, np.int32),
        "start_frame": (np.arange(n_rows) * width).astype(np.int32),
    }
    row_s = width / cfg.frames_per_s
    for r in range(n_rows):
        t0 = r * row_s
        table = notes[(notes[:, 1] > t0) & (notes[:, 0] < t0 + row_s)].copy()
        dropped += max(0, len(table) - cfg.max_notes)  # the row's note list is full: the targets still hold them
        table = table[: cfg.max_notes]
        table[:, :2] -= t0
        out["notes"][r, : len(table)], out["n_notes"][r] = table, len(table)
    return windows, out, dropped


def decode_labelled(path: Path, sample_rate: int) -> np.ndarray:
    """A labelled track's audio, mono float32; refused (one line) if it is not at `sample_rate`."""
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise ValueError(f"{path}: {rate} Hz, expected {sample_rate} Hz (pitch_notes.sample_rate; rerun pitch-notes-render)")
    return audio.mean(axis=1)


def build_frames_set(cfg: PitchNotesConfig, source_dir: Path, source: str, split: str, out_path: Path) -> dict[str, Any]:
    """One source × split store from `data/notes/<source>/`; a track whose labels or audio cannot be
    read is quarantined with its reason and the rest goes on."""
    tracks = [t for t in read_tracks(source_dir) if t["split"] == split]
    quarantined: list[dict[str, str]] = []
    kept: list[str] = []
    dropped = rows = 0
    attrs = {"set": source, "split": split, "frames_per_s": cfg.frames_per_s, "frame_hop": cfg.frame_hop,
             "window_frames": cfg.window_frames, "min_midi": cfg.min_midi, "n_pitches": cfg.n_pitches,
             "note_fields": list(LABEL_FIELDS)}
    with ShardWriter(out_path, cfg=cfg, attrs=attrs, required=()) as writer:
        for track in tqdm(tracks, desc=f"pitch-notes: {source}-{split}", unit="track"):
            try:
                notes = read_labels(source_dir / "labels" / f"{track['track']}.mid")
                audio = decode_labelled(source_dir / "audio" / f"{track['track']}.flac", cfg.sample_rate)
            except (LabelError, ValueError, RuntimeError) as exc:
                quarantined.append({"track": track["track"], "reason": str(exc).splitlines()[0]})
                continue
            windows, values, lost = track_rows(audio, notes, cfg, len(kept))
            writer.add(windows, values)
            kept.append(track["track"])
            dropped += lost
            rows += len(windows)
        writer.extra_attrs["track_names"] = kept
    return {"set": source, "split": split, "tracks": len(kept), "rows": rows, "notes_dropped": dropped,
            "quarantined": quarantined}


def set_names(cfg: PitchNotesConfig) -> list[tuple[str, str]]:
    return [(source, split) for source in cfg.sources for split in SPLITS]
