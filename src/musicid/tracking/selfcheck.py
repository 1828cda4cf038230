"""The known answer a registered model is checked against before it serves.

At registration a family stores a short clip with its bundle (artifact `selfcheck/clip.wav`: a cut of one
reference, so the fingerprinter must find that reference at that offset) and the registered model's own
answer to it, as a model-version tag. A service loading that version later (`musicid serve`) asks again
and refuses the version when the answer differs: a bundle that does not load the model it was registered
with, a changed index, a dependency that changed the numbers. Answers are compared after rounding
(scores to 3 decimals, times to 2) and keeping the first 5 items of each list.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

KNOWN_ANSWER_TAG = "musicid.known_answer"
SELFCHECK_ARTIFACT = "selfcheck"
CLIP = "clip.wav"
MAX_TAG_CHARS = 4500  # MLflow keeps tag values up to 5000 characters on every backend
LIST_ITEMS = 5
PER_REQUEST = ("query", "warning", "seconds", "elapsed_ms")  # name the request's temporary file, or time it


def cut_clip(source: str | Path, folder: Path, start_s: float = 1.0, seconds: float = 4.0) -> Path:
    """`seconds` of `source` from `start_s` (from its start when shorter; all of it when shorter still) as
    folder/clip.wav, mono 16-bit."""
    import soundfile as sf

    audio, rate = sf.read(str(source), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    length = int(seconds * rate)
    start = int(start_s * rate) if len(mono) >= int(start_s * rate) + length else 0
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / CLIP, mono[start:start + length], rate, subtype="PCM_16")
    return folder / CLIP


def clip_or_none(make: Any, what: str) -> Path | None:
    """`make()`'s clip, or None (said on stdout) when its source is missing: registering goes on, and a
    service checks that version by the dummy forward alone."""
    from musicid.errors import MusicidError

    try:
        return make()
    except (MusicidError, OSError, KeyError, IndexError, ValueError) as exc:
        print(f"registry: no known-answer clip ({what}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
        return None


def tone_clip(folder: Path, midi: int = 69, seconds: float = 2.0, rate: int = 16000) -> Path:
    """A plucked harmonic tone as folder/clip.wav: the pitch family's known-answer clip (no data needed)."""
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    freq = 440.0 * 2 ** ((midi - 69) / 12)
    tone = sum(np.sin(2 * np.pi * freq * k * t) / k for k in (1, 2, 3)) * np.exp(-1.5 * t)
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / CLIP, (0.3 * tone).astype(np.float32), rate, subtype="PCM_16")
    return folder / CLIP


def noise_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    """Quiet seeded noise as WAV bytes: the dummy input every model must answer without an error."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, 0.01 * np.random.default_rng(0).standard_normal(int(seconds * rate)).astype(np.float32), rate,
             format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def normalised(answer: Any) -> Any:
    """What is compared: rounded numbers, the first items of lists, no per-request fields."""
    if isinstance(answer, dict):
        return {k: normalised(v) for k, v in sorted(answer.items()) if k not in PER_REQUEST}
    if isinstance(answer, (list, tuple)):
        return [normalised(v) for v in list(answer)[:LIST_ITEMS]]
    if isinstance(answer, float):
        return round(answer, 3 if abs(answer) <= 1.5 else 2)
    if isinstance(answer, np.generic):
        return normalised(answer.item())
    return answer


def encode_known_answer(answer: Any) -> str:
    text = json.dumps(normalised(answer), sort_keys=True, separators=(",", ":"))
    if len(text) > MAX_TAG_CHARS:  # keep the head: the first matches / notes decide
        text = json.dumps({"truncated": text[:MAX_TAG_CHARS - 40]})
    return text


def differs(expected: str, answer: Any) -> str | None:
    """None when `answer` gives the recorded known answer; else what differs, in one line."""
    got = encode_known_answer(answer)
    if got == expected:
        return None
    return f"known answer changed: registered {expected[:160]}, now {got[:160]}"


__all__ = ["CLIP", "KNOWN_ANSWER_TAG", "SELFCHECK_ARTIFACT", "clip_or_none", "cut_clip", "differs", "encode_known_answer",
           "noise_wav", "normalised", "tone_clip"]
