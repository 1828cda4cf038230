"""musicid: a versioned artifact store and pipeline for music identification."""

__version__ = "0.1.0"
