"""The fingerprinter as an MLflow pyfunc model: weights + config + FAISS index in one artifact.

`mlflow.pyfunc.load_model("models:/musicid-fingerprinter@champion").predict(...)` and
`mlflow models serve` answer with the same matches `musicid identify --json` prints.
Input: an `audio` column (DataFrame, dict or the server's `dataframe_records`) of audio file paths
or base64-encoded audio files (any format soundfile/ffmpeg decodes).
"""

from __future__ import annotations

import warnings

import mlflow.pyfunc

from musicid.tracking.pyfunc_io import answer_each
from musicid.tracking.registry import INDEX_ARTIFACT, MODEL_ARTIFACT, SETTINGS_ARTIFACT


# MLflow forces its "add type hints to predict" notice through any filter at class creation; the
# input schema is logged explicitly instead, so record (drop) it.
with warnings.catch_warnings(record=True):

    class FingerprinterModel(mlflow.pyfunc.PythonModel):
        """Loads the model folder and its index once; predict identifies each input clip."""

        def load_context(self, context) -> None:
            from musicid.config import IdentifyConfig
            from musicid.fsutil import read_json
            from musicid.families.fingerprint.identifier import Identifier

            settings = read_json(context.artifacts[SETTINGS_ARTIFACT])
            self.identifier = Identifier.load(
                context.artifacts[MODEL_ARTIFACT], context.artifacts[INDEX_ARTIFACT],
                IdentifyConfig(**settings.get("identify", {})), open_set=settings.get("open_set"),
            )

        def predict(self, context, model_input, params=None):  # untyped: the input schema is logged explicitly
            top = int((params or {}).get("top") or self.identifier.cfg.top)
            return answer_each(model_input, lambda path: self.identifier.identify_path(path, top=top))


__all__ = ["FingerprinterModel"]
