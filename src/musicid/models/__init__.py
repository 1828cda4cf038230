"""Networks and losses, one file per model family."""
