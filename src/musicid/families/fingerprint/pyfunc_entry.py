"""MLflow "models from code" entry: the file `log_model(python_model=...)` records for the fingerprinter."""

import mlflow.models

from musicid.families.fingerprint.pyfunc import FingerprinterModel

mlflow.models.set_model(FingerprinterModel())
