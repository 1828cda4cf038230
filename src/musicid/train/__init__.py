"""Training loop for the fingerprinter: pairs, NT-Xent, validation, checkpoints, early stopping."""
