"""MLflow "models from code" entry: the file `log_model(python_model=...)` records for the pitch model."""

import mlflow.models

from musicid.families.pitch.pyfunc import PitchModel

mlflow.models.set_model(PitchModel())
