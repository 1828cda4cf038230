"""The work identifier as an MLflow pyfunc model: weights + config + works index in one artifact.

`mlflow.pyfunc.load_model("models:/musicid-work-identifier@champion").predict(...)` and
`mlflow models serve` answer with the same JSON `musicid works identify --json` prints. Input: an
`audio` column of audio file paths or base64-encoded audio files.
"""

from __future__ import annotations

import warnings

import mlflow.pyfunc

from musicid.tracking.pyfunc_io import answer_each
from musicid.tracking.registry import INDEX_ARTIFACT, MODEL_ARTIFACT, SETTINGS_ARTIFACT

with warnings.catch_warnings(record=True):  # MLflow's type-hint notice at class creation (schema logged explicitly)

    class WorkIdentifierModel(mlflow.pyfunc.PythonModel):
        """Loads the model folder and its works index once; predict ranks works for each clip."""

        def load_context(self, context) -> None:
            from musicid.config import WorksIdentifyConfig
            from musicid.families.works.identify import WorkIdentifier
            from musicid.fsutil import read_json

            settings = read_json(context.artifacts[SETTINGS_ARTIFACT])
            self.identifier = WorkIdentifier.load(
                context.artifacts[MODEL_ARTIFACT], context.artifacts[INDEX_ARTIFACT],
                WorksIdentifyConfig(**settings.get("identify", {})),
            )

        def predict(self, context, model_input, params=None):  # untyped: the input schema is logged explicitly
            top = int((params or {}).get("top") or self.identifier.cfg.top)
            return answer_each(model_input, lambda path: self.identifier.identify_path(path, top=top))


__all__ = ["WorkIdentifierModel"]
