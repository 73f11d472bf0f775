"""isoflop_trainer: the DiT workload every isoflop trial runs."""

__version__ = "0.1.0"
