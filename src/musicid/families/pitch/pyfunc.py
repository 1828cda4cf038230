"""The pitch model as an MLflow pyfunc model: `predict` gives what `musicid pitch predict --json` prints."""

from __future__ import annotations

import warnings

import mlflow.pyfunc

from musicid.tracking.pyfunc_io import answer_each
from musicid.tracking.registry import MODEL_ARTIFACT, SETTINGS_ARTIFACT

with warnings.catch_warnings(record=True):

    class PitchModel(mlflow.pyfunc.PythonModel):
        """Loads the model folder once; predict returns per-frame pitches for each clip."""

        def load_context(self, context) -> None:
            from musicid.config import PitchPredictConfig
            from musicid.families.pitch.io import load_model
            from musicid.fsutil import read_json

            settings = read_json(context.artifacts[SETTINGS_ARTIFACT])
            self.cfg = PitchPredictConfig(**settings.get("predict", {}))
            self.loaded = load_model(context.artifacts[MODEL_ARTIFACT], "auto")

        def predict(self, context, model_input, params=None):
            from musicid.families.pitch.io import answer_path

            return answer_each(model_input, lambda path: answer_path(self.loaded, path, self.cfg.hop_samples,
                                                                     self.cfg.threshold))


__all__ = ["PitchModel"]
