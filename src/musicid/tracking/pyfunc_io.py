"""What a served musicid model receives: audio paths or base64 audio, in any shape pyfunc hands over.

Every family's pyfunc class reads its input through these helpers, so `mlflow models serve` and
`mlflow.pyfunc.load_model(...).predict` take the same `audio` column for every family.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def audio_inputs(model_input: Any) -> list[str]:
    """What pyfunc or the scoring server hands us (DataFrame/dict with an `audio` column, list, str) as strings."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        model_input = model_input["audio" if "audio" in model_input.columns else model_input.columns[0]].tolist()
    elif isinstance(model_input, dict):
        model_input = model_input.get("audio", [])
    if isinstance(model_input, (str, bytes)):
        model_input = [model_input]
    values: list[Any] = []
    for value in model_input:  # a dict of lists arrives as one row holding the whole list
        values.extend(value if isinstance(value, (list, tuple, np.ndarray)) else [value])
    return [value.decode() if isinstance(value, bytes) else str(value) for value in values]


def as_base64(value: str) -> bytes | None:
    if len(value) < 64 or Path(value).suffix:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def encode_audio(path: str | Path) -> str:
    """Base64 of an audio file, as a served model's `audio` column takes it."""
    return base64.b64encode(Path(path).read_bytes()).decode()



def answer_each(model_input: Any, answer: Callable[[str], dict[str, Any]]) -> list[dict[str, Any]]:
    """Call `answer(path)` for each input clip; base64 clips go through a temporary file."""
    results = []
    for number, value in enumerate(audio_inputs(model_input)):
        payload = as_base64(value)
        if payload is None:
            results.append(answer(value))
            continue
        with tempfile.NamedTemporaryFile(suffix=".audio") as handle:
            handle.write(payload)
            handle.flush()
            results.append(answer(handle.name) | {"query": f"base64[{number}]"})
    return results


__all__ = ["answer_each", "as_base64", "audio_inputs", "encode_audio"]
