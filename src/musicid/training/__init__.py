"""The training loop every family runs: seeds, device, resume, early stopping, history, curves."""

from musicid.training.loop import LoopResult, fit, run_key, store_version, write_history

__all__ = ["LoopResult", "fit", "run_key", "store_version", "write_history"]
