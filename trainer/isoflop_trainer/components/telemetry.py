"""Trial telemetry: Prometheus metrics on rank 0, and the final result as JSON."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from isoflop_trainer.data.store import atomic_write

LABELS = ("sweep", "trial", "budget")
TERMINATION_MESSAGE_LIMIT = 4096  # bytes Kubernetes keeps of /dev/termination-log

GAUGES = {
    "train_loss": "Training loss of the last step",
    "train_loss_ema": "Training loss, exponential moving average (0.9)",
    "eval_loss": "Validation loss at fixed (timestep, noise) pairs",
    "eval_bpd": "Validation negative log-likelihood, bits per dimension",
    "eval_fid": "Frechet distance of generated vs reference features",
    "eval_loss_se": "Standard error of the validation loss over its samples",
    "step": "Optimizer steps done",
    "steps_total": "Optimizer steps planned",
    "params": "Model parameters (exact count)",
    "samples": "Training samples consumed",
    "tokens": "Training tokens consumed",
    "flops": "Training FLOPs spent (exact accounting)",
    "tokens_per_second": "Training throughput, tokens per second (all ranks)",
    "mfu": "Model FLOPs utilisation (0-1)",
    "learning_rate": "Current learning rate",
    "epochs": "Passes over the training data",
    "done": "1 once the trial finished (succeeded or failed)",
    "failed": "1 if the trial failed",
}


class Telemetry:
    """Gauges named isoflop_<name>, labelled by sweep, trial and budget; served over HTTP."""

    def __init__(
        self,
        sweep: str,
        trial: str,
        budget: float,
        port: int | None = None,
        address: str = "0.0.0.0",
    ) -> None:
        self.registry = CollectorRegistry()
        self.labels = {"sweep": sweep, "trial": trial, "budget": f"{budget:g}"}
        # a series appears when first set: a metric this trial never measures (FID unasked)
        # is absent, never a misleading 0
        self.families = {
            name: Gauge(f"isoflop_{name}", doc, LABELS, registry=self.registry)
            for name, doc in GAUGES.items()
        }
        self.server: Any = None
        if port is not None:
            self.server = start_http_server(port, addr=address, registry=self.registry)
            self.port = self.server[0].server_port

    def set(self, **values: float | None) -> None:
        for name, value in values.items():
            if value is not None:
                self.families[name].labels(**self.labels).set(value)

    def linger(self, seconds: float) -> None:
        """Keep serving the final values so a scraper that polls every few seconds sees them."""
        if self.server is not None and seconds > 0:
            time.sleep(seconds)

    def close(self) -> None:
        if self.server is not None:
            self.server[0].shutdown()
            self.server = None


def compact_result(result: dict[str, Any]) -> str:
    """The result's scalars as JSON, under Kubernetes' 4 KiB termination-message limit (the loss
    curve and any traceback stay in the results file)."""
    keep = {k: v for k, v in result.items() if not isinstance(v, list | dict) and k != "trace"}
    if isinstance(keep.get("error"), str):
        keep["error"] = keep["error"][:1000]
    return json.dumps(keep, separators=(",", ":"))[:TERMINATION_MESSAGE_LIMIT]


def write_result(
    result: dict[str, Any],
    path: str | None,
    termination_log: str | None,
    compact: str | None = None,
) -> None:
    """The full result to the results file (atomically); a compact copy (`compact_result`'s,
    unless given) to the termination log."""
    if path:
        atomic_write(Path(path), json.dumps(result, indent=2).encode())
    # Kubernetes mounts the termination log into the container; elsewhere it does not exist and
    # nothing is written (never create files under /dev on a workstation).
    if termination_log and os.path.exists(termination_log):
        try:
            with open(termination_log, "w") as f:
                f.write(compact if compact is not None else compact_result(result))
        except OSError:
            pass  # not in a pod (no writable /dev/termination-log): the results file has it all
