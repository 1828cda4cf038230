"""The audio fingerprinter: which recording a short, degraded clip comes from, and where.

Contrastive segment embeddings (`model`), trained on clean/degraded pairs (`train`), indexed every
hop in FAISS and searched with offset-consistent voting (`identifier`, `voting`); evaluated on
rendered degraded queries (`queries`, `evaluate`); released with a model card (`release`) and an
MLflow pyfunc (`pyfunc`). The declaration the spine uses is `family.FAMILY`.
"""
