"""Evaluation: degraded queries on held-out tracks, hit rates, latency, plots."""
