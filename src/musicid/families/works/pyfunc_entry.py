"""MLflow "models from code" entry: the file `log_model(python_model=...)` records for the work identifier."""

import mlflow.models

from musicid.families.works.pyfunc import WorkIdentifierModel

mlflow.models.set_model(WorkIdentifierModel())
