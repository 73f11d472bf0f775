"""`isoflop-train train`: one trial, launched by torchrun (DDP or FSDP2; NCCL on GPU, gloo on CPU).

`train` runs the Trainer (isoflop_trainer.trainer) and turns whatever happens into a result: the
full result to the results file, a compact one to the pod's termination message, the metrics'
last values served for a final scrape, and an exit code the Job's retry policy reads
(components.failures).
"""

from __future__ import annotations

import time
import traceback
from typing import Any

from isoflop_trainer.components.failures import (
    PERMANENT_EXIT_CODE,
    DataError,
    TrialFailed,
    permanent,
)
from isoflop_trainer.components.runtime import setup, teardown
from isoflop_trainer.components.telemetry import Telemetry, write_result
from isoflop_trainer.components.tracking import RUN_END, for_trial
from isoflop_trainer.config import TrainConfig
from isoflop_trainer.trainer import Trainer


def train(cfg: TrainConfig) -> tuple[dict[str, Any], int]:
    """Run a trial; returns its result and the process exit code (0; 1 failed, worth a retry; 65
    failed for good, see `permanent`; 143 preempted)."""
    rt = setup()
    telemetry = tracker = None
    if rt.main:
        telemetry = Telemetry(
            cfg.sweep, cfg.trial, cfg.budget, cfg.metrics_port, cfg.metrics_address
        )
        tracker = for_trial(cfg)
    start = time.time()
    try:
        result, code = Trainer(cfg, rt, telemetry, tracker).fit()
    except Exception as err:  # every failure ends in a readable result, classed for retries
        result = {"status": "failed", "error": str(err) or type(err).__name__}
        if not isinstance(err, TrialFailed | DataError):
            result["error"] = f"{type(err).__name__}: {err}"
            result["trace"] = traceback.format_exc(limit=3)
        result["permanent"] = permanent(err, rt.stepped)
        code = PERMANENT_EXIT_CODE if result["permanent"] else 1
    result = {
        "sweep": cfg.sweep,
        "trial": cfg.trial,
        "budget": cfg.budget,
        **result,
        "wall_seconds": round(time.time() - start, 3),
    }
    if tracker is not None:  # a bounded wait for what is buffered; never fails the trial
        if result["status"] == "failed":
            tracker.set_tags({"isoflop.error": str(result["error"])[:5000]})
        record = tracker.close(RUN_END.get(result["status"], "FAILED"))
        result.update(
            tracking=record.to_dict(),
            tracking_run_id=record.run_id,
            tracking_dropped=record.dropped,
        )
        for warning in record.warnings:
            print(f"isoflop-train: {warning}", flush=True)
    if rt.main:
        write_result(result, cfg.results, cfg.termination_log)
        if telemetry is not None:
            telemetry.set(done=1, failed=1 if result["status"] == "failed" else 0)
            telemetry.linger(cfg.metrics_linger_seconds)
            telemetry.close()
    teardown(rt)
    return result, code
