"""MLflow "models from code" entry: the file `log_model(python_model=...)` records for the transcriber."""

import mlflow.models

from musicid.families.pitch.pyfunc_transcriber import TranscriberModel

mlflow.models.set_model(TranscriberModel())
