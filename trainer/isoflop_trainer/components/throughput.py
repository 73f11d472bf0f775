"""Throughput: samples per second over logging windows, with each process's first window (which
holds torch.compile's compilation and the warm-up of kernels and allocator, tens of seconds on a
GPU) kept out of the steady rate that tokens/s and MFU report."""

from __future__ import annotations

import time

from isoflop_trainer.components.checkpoint import LoopState


class Throughput:
    def __init__(self, state: LoopState) -> None:
        self.state = state
        self.first_step = state.step  # always logged: its window is the warm-up
        self.start, self.samples = time.perf_counter(), 0

    def add(self, samples: int) -> None:
        self.samples += samples

    def window(self, step: int) -> float:
        """Close the window that ends at this step; its samples per second."""
        elapsed = time.perf_counter() - self.start
        rate = self.samples / max(elapsed, 1e-9)
        self.state.seconds += elapsed
        if step != self.first_step:
            self.state.steady_seconds += elapsed
            self.state.steady_samples += self.samples
        self.start, self.samples = time.perf_counter(), 0
        return rate

    def finish(self) -> None:
        """The steps since the last window count towards the run's seconds. Nothing when none
        was trained: a resumed finished trial trains nothing, so its seconds stay as saved."""
        if self.samples:
            self.state.seconds += time.perf_counter() - self.start

    def steady_rate(self) -> float:
        s = self.state
        if s.steady_seconds > 0:
            return s.steady_samples / s.steady_seconds
        return s.samples / s.seconds if s.seconds else 0.0  # a run of a single window: all of it
