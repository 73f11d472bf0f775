"""How a trial fails: for good (the same failure on every retry) or worth another attempt.

Exit codes: 0 succeeded; 1 failed, worth a retry; 65 failed for good (no retry can mend it); 143
preempted (SIGTERM: the Job retries, the trial resumes from its checkpoint).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from isoflop_trainer.data.store import PERMANENT_EXIT_CODE

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM
__all__ = ["PERMANENT_EXIT_CODE", "PREEMPTED_EXIT_CODE", "DataError", "TrialFailed", "permanent"]


class DataError(Exception):
    """The data cannot be read or does not match the trial: fail once, never retry."""


class TrialFailed(Exception):
    """The trial cannot succeed (NaN, divergence, bad data): a clear failure result, not a retry."""


# What the machine or the network did, not the trial: worth another attempt.
TRANSIENT = (dist.DistError, ConnectionError, TimeoutError, OSError)
TRANSIENT_WORDS = ("NCCL", "CUDA error", "ECC", "Xid", "socket", "timed out")


def permanent(err: BaseException, stepped: bool) -> bool:
    """Whether a failure will recur on every retry. Training is deterministic (seeded data, init and
    noise), so what the trial itself runs into does: missing or mismatched data, a config the
    model or batch cannot take, a NaN or divergence, any error before its first step completes,
    out of memory at the first step. Transient, and retried: what the machine or the network did
    (NCCL, CUDA errors, timeouts, lost peers, I/O), and running out of memory after steps ran."""
    if isinstance(err, TrialFailed | DataError):
        return True
    if isinstance(err, torch.OutOfMemoryError):
        return not stepped
    if isinstance(err, TRANSIENT) or any(w in str(err) for w in TRANSIENT_WORDS):
        return False
    return not stepped or isinstance(err, ValueError | TypeError | KeyError | IndexError)
