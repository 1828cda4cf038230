"""Data sources, ingestion, inspection, manifests and splits."""
