"""Model folders shared by every family (signed weights + config.json)."""
