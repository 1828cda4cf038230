"""The note transcriber as an MLflow pyfunc model: `predict` gives what `musicid transcribe --json` prints."""

from __future__ import annotations

import warnings

import mlflow.pyfunc

from musicid.tracking.pyfunc_io import answer_each
from musicid.tracking.registry import MODEL_ARTIFACT, SETTINGS_ARTIFACT

FRAME_ARTIFACT = "frame"  # the frame network's folder beside the onset network (MODEL_ARTIFACT)

with warnings.catch_warnings(record=True):

    class TranscriberModel(mlflow.pyfunc.PythonModel):
        """Loads (and self-checks) both networks once; predict returns the notes of each clip."""

        def load_context(self, context) -> None:
            from musicid.config import TranscribeConfig
            from musicid.families.pitch.transcribe import load_transcriber
            from musicid.fsutil import read_json

            settings = read_json(context.artifacts[SETTINGS_ARTIFACT])
            self.cfg = TranscribeConfig(**settings.get("transcribe", {}))
            self.tr = load_transcriber(context.artifacts[MODEL_ARTIFACT], context.artifacts[FRAME_ARTIFACT], "auto",
                                       settings.get("window_frames"))

        def predict(self, context, model_input, params=None):
            from musicid.families.pitch.transcribe import transcribe_path

            return answer_each(model_input, lambda path: transcribe_path(self.tr, path, self.cfg))


__all__ = ["FRAME_ARTIFACT", "TranscriberModel"]
