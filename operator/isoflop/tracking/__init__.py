"""Experiment tracking of sweeps (MLflow)."""
