"""Research-scale experiments over DVC experiments and MLflow: tuning grids and their summaries."""
