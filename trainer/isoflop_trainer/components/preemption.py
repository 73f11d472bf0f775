"""Preemption: SIGTERM (a node drained, a Job deleted, Kueue evicting) asks the trial to stop at
the next step, checkpoint, and exit 143, so the next attempt resumes where this one stopped.

Every rank must stop at the same step, or the collective checkpoint hangs: the ranks vote each
step with a CPU all-reduce, so the GPU's queue is never drained for it.
"""

from __future__ import annotations

import signal
from types import FrameType, TracebackType

import torch
import torch.distributed as dist

from isoflop_trainer.components.runtime import Runtime


class Preemption:
    """Held for the training loop: `stop()` says whether any rank was asked to stop."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.requested = False
        self.previous: object = None

    def __enter__(self) -> Preemption:
        self.previous = signal.signal(signal.SIGTERM, self.on_sigterm)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        signal.signal(signal.SIGTERM, self.previous)  # type: ignore[arg-type]

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def stop(self) -> bool:
        """Whether any rank was told to stop (a collective: every rank calls it each step)."""
        if self.rt.world == 1:
            return self.requested
        flag = torch.tensor([float(self.requested)])
        dist.all_reduce(flag)
        return bool(flag.item() > 0)
