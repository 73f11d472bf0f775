"""The sweep core, pure: a manifest's plan, its strategy, the engine's decisions, packing,
the trainer's settings per trial, simulated sweeps, and the data check. No kopf, kubernetes,
torch or boto3 at import time: it runs, and is tested, anywhere."""
