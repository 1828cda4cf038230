"""The pitch family: generated note windows with per-bin targets, a pitch network, its evaluation."""
