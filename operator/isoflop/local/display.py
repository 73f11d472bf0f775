"""What `isoflop run` shows while it works.

On a terminal, a live view drawn with rich: the trials by phase, each running trial with its
progress bar and current loss, the latest laws, elapsed time and ETA. With `--plain`, or when the
output is a pipe or a file, one line per event (a trial's new phase, a new fit), which tests and
log readers rely on:

    [0:03] 1e11-d2w64: Succeeded loss 0.4312
    [0:05] fitted laws on budgets 1e11, 2e11: N* ~ C^0.5612, D* ~ C^0.4388, L* ~ C^-0.0412
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from isoflop import api
from isoflop.local.backends import Observation
from isoflop.local.rundir import RunState
from isoflop.sweep.engine import Decision, TrialState
from isoflop.sweep.plan import format_flops
from isoflop.sweep.strategy import Graph


class Run(Protocol):
    """What the display reads of a run (isoflop.local.runner.Run)."""

    sweep: api.ScalingSweep
    state: RunState
    live: dict[str, Observation]  # running trials' latest progress
    graph: Graph
    skipped: frozenset[str]
    started: float  # this session's start (time.time())

    @property
    def elapsed(self) -> float: ...


PHASES = ("succeeded", "running", "pending", "failed", "skipped", "infeasible")


class Display:
    """Live progress on a terminal; one line per event otherwise."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        # sys.stdout when called, not when this module was imported (a test's capture, closed)
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.seen: dict[str, str] = {}
        self.view: Live | None = None

    def note(self, text: str) -> None:
        """A message that stays: above the live view, or one line."""
        if self.view is not None:
            self.view.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Stop redrawing; the last view stays on the screen."""
        if self.view is not None:
            self.view.stop()
            self.view = None

    def update(self, run: Run, decision: Decision) -> None:
        if not self.live:
            self.lines(run)
            return
        if self.view is None:
            console = Console(file=self.stream, force_terminal=True, highlight=False)
            self.view = Live(console=console, auto_refresh=False, redirect_stdout=False,
                             redirect_stderr=False)  # fmt: skip
            self.view.start()
        self.view.update(live_view(run, decision), refresh=True)

    def lines(self, run: Run) -> None:
        """One line per trial that changed phase (running is no event), one per new fit."""
        for tid, s in sorted(run.state.trials.items()):
            label = s.phase if s.phase != "Succeeded" else f"Succeeded loss {s.loss:.4f}"
            if self.seen.get(tid) != label and s.phase != "Running":
                self.seen[tid] = label
                msg = f" ({s.error})" if s.phase == "Failed" and s.error else ""
                self.say(run, f"{tid}: {label}{msg}")
        key = f"fit:{run.state.fitted}"
        if run.state.fit is not None and self.seen.get("fit") != key:
            self.seen["fit"] = key
            budgets = ", ".join(format_flops(b) for b in run.state.fitted)
            self.say(run, f"fitted laws on budgets {budgets}: {law_line(run.state.fit)}")

    def say(self, run: Run, text: str) -> None:
        print(f"[{fmt_time(run.elapsed)}] {text}", file=self.stream, flush=True)


def live_view(run: Run, decision: Decision) -> Group:
    """The terminal view of one moment of the run."""
    c = decision.counts
    head = Text.assemble(
        (run.sweep.name, "bold"),
        f": {decision.phase}   elapsed {fmt_time(run.elapsed)}   eta {fmt_time(eta(run))}",
    )
    phases = Text("  ".join(f"{p} {c.get(p, 0)}" for p in PHASES if c.get(p, 0) or p in PHASES[:3]))
    phases.append(f"  of {c.get('total', 0)}")
    running = Table(box=None, show_header=False, padding=(0, 1), pad_edge=False)
    for column in ("trial", "bar", "steps", "loss"):
        running.add_column(column, no_wrap=True, justify="right" if column == "steps" else "left")
    for tid, obs in sorted(run.live.items()):
        if obs.step is not None and obs.steps:
            loss = "" if obs.current_loss is None else f"loss {obs.current_loss:.4f}"
            bar = ProgressBar(total=obs.steps, completed=obs.step, width=24)
            running.add_row(tid, bar, f"{obs.step}/{obs.steps}", loss)
        else:
            running.add_row(tid, Text("starting", style="dim"), "", "")
    parts: list[Text | Table] = [head, phases]
    if run.live:
        parts.append(running)
    if run.state.fit is not None:
        parts.append(Text(f"laws: {law_line(run.state.fit)}"))
    return Group(*parts)


def law_line(fit_result: api.FitResult) -> str:
    laws = fit_result.laws
    parts = []
    for name, law in (("N*", laws.params), ("D*", laws.tokens), ("L*", laws.loss)):
        if law is not None:
            parts.append(f"{name} ~ C^{law.exponent:.4f}")
    return ", ".join(parts) or "; ".join(fit_result.warnings) or "no laws yet"


def eta(run: Run) -> float | None:
    """Seconds left, from the FLOPs done so far in this session (each node's own: a branch its
    cooldown, a stable segment its stretch of the run)."""
    nodes = run.graph.planned(run.skipped)
    total = sum(n.own_flops for n in nodes)
    done: float = sum(
        n.own_flops
        for n in nodes
        if run.state.trials.get(n.id, TrialState()).phase in ("Succeeded", "Failed")
    )
    for tid, obs in run.live.items():
        n = run.graph.by_id.get(tid)
        if n is not None and obs.step and obs.steps:
            first = n.start_step or n.branch_step  # where its own steps begin
            own = max(obs.step - first, 0) / max(obs.steps - first, 1)
            done += n.own_flops * own
    spent = time.time() - run.started
    if done <= 0 or spent < 1:
        return None
    return max(total - done, 0) * spent / done


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
