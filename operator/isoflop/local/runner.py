"""`isoflop run`: a sweep on this machine, the engine's decisions applied by a backend.

The run directory holds everything, and survives Ctrl-C, crashes and reboots:

    state.json      every trial's state and the fitted budgets; rewritten after every change
    status.json     the ScalingSweep status document (what the operator writes to the resource)
    trials.csv      the trial table;  report.md  a short report;  plots/  isoFLOP curves and laws
    trials/<id>/    config.json, log.txt, progress.json, result.json, checkpoint/ of each trial,
                    and pid.json while its trainer runs (a stable segment's trial folder too)
    stable/<run>/   with WSD branches: the checkpoints of each rung's stable run, which its
                    segments continue and its branches start from
    run.lock        held (flock) by the one run working here, naming it (isoflop.local.runlock)

Running the same command again resumes: finished trials are never trained again, interrupted ones
continue from their checkpoints.
"""

from __future__ import annotations

import csv
import hashlib
import json
import signal
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from isoflop import __version__, api
from isoflop.local.backends import Backend, Observation, SimulatedBackend, read_json
from isoflop.local.runlock import LockedError, RunLock
from isoflop.sweep import engine
from isoflop.sweep.engine import TrialState
from isoflop.sweep.packing import Packing
from isoflop.sweep.plan import Plan, format_flops, plan
from isoflop.sweep.strategy import graph
from isoflop.sweep.trials import fit, node_config
from isoflop_trainer.store import atomic_write


class RunError(Exception):
    """A problem with the run itself (its directory, its state); one sentence."""


# ------------------------------------------------------------------------------------------------
# the run


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Run:
    """One sweep in one run directory: load, step the engine, apply, persist, report."""

    def __init__(self, sweep: api.ScalingSweep, directory: Path, backend: Backend) -> None:
        self.sweep, self.spec, self.backend = sweep, sweep.spec, backend
        self.dir = directory.resolve()  # trials run in their own folders: paths must be absolute
        self.plan: Plan = plan(self.spec)
        self.graph = graph(self.spec, self.plan.trials)  # what the strategy trains
        # the engine's spec: packing only where trials have GPUs to share
        self.engine_spec = self.spec
        self.notices: list[str] = []
        if self.spec.resources.packing is not None and not backend.packs:
            resources = self.spec.resources.model_copy(update={"packing": None})
            self.engine_spec = self.spec.model_copy(update={"resources": resources})
            self.notices.append(
                "spec.resources.packing shares GPUs, and this run has none: parallelism alone "
                "limits the trials at once"
            )
        self.packing = Packing.of(self.engine_spec)
        self.skipped: frozenset[str] = frozenset()  # what the adaptive ladder left out so far
        self.states: dict[str, TrialState] = {}
        self.fitted: tuple[float, ...] = ()
        self.fit: api.FitResult | None = None
        self.conditions: list[api.Condition] = []
        self.live: dict[str, Observation] = {}
        self.elapsed_before = 0.0
        self.started = time.time()
        self.analysis: Any = None
        self.fit_text: str | None = None  # the fit as text, kept with the results it came from
        self.fit_key: str | None = None
        self.fitting = False  # Ctrl-C stops a fit at once rather than waiting for it
        self.plots: list[Path] = []
        self.lock = RunLock(self.dir)
        try:
            self.load()
            finished = {tid for tid, st in self.states.items() if st.phase == "Succeeded"}
            # what a runner killed before this one left: its trainers stopped, its results kept
            self.recovered = self.backend.recover(self.dir / "trials", finished)
        except BaseException:
            self.lock.release()
            raise

    def close(self) -> None:
        """Let another run use the directory (the process's end does the same)."""
        self.lock.release()

    # -- persistence ------------------------------------------------------------------------------

    def load(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise RunError(
                f"cannot write to the run directory {self.dir}: {err.strerror or err}"
            ) from None
        try:
            self.lock.acquire()
        except LockedError as err:
            raise RunError(str(err)) from None
        saved = read_json(self.dir / "state.json")
        if not saved:
            return
        if saved.get("sweep") != self.sweep.name:
            raise RunError(
                f"{self.dir} holds the run of sweep {saved.get('sweep')!r}, "
                f"not {self.sweep.name!r}; choose another --run-dir"
            )
        for tid, fields in saved.get("trials", {}).items():
            fields["metrics"] = tuple(tuple(m) for m in fields.get("metrics", ()))
            s = TrialState(**fields)
            if s.phase in engine.ACTIVE:  # it was running when the runner stopped: resume it
                s = TrialState(phase="Pending", attempts=max(s.attempts - 1, 0), loss=s.loss)
            self.states[tid] = s
        self.fitted = tuple(saved.get("fitted", ()))
        if saved.get("fit"):
            self.fit = api.FitResult.model_validate(saved["fit"])
        self.fit_text, self.fit_key = saved.get("fitText"), saved.get("fitKey")
        self.conditions = [api.Condition.model_validate(c) for c in saved.get("conditions", [])]
        self.elapsed_before = float(saved.get("elapsed_seconds", 0.0))

    def save(self) -> None:
        data = {
            "sweep": self.sweep.name,
            "trials": {tid: asdict(s) for tid, s in sorted(self.states.items())},
            "fitted": list(self.fitted),
            "fit": self.fit.to_wire() if self.fit else None,
            "fitText": self.fit_text,
            "fitKey": self.fit_key,
            "conditions": [c.to_wire() for c in self.conditions],
            "elapsed_seconds": self.elapsed,
        }
        atomic_write(self.dir / "state.json", json.dumps(data, indent=1))

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    # -- the loop ---------------------------------------------------------------------------------

    def step(self) -> engine.Decision:
        """Observe, decide, apply; returns the decision it applied."""
        changed = False
        for tid, obs in self.backend.observe().items():
            s = self.states.get(tid, TrialState())
            if obs.phase == "Running":
                self.live[tid] = obs
                if s.phase != "Running":
                    self.states[tid], changed = (
                        TrialState(**{**asdict(s), "phase": "Running"}),
                        True,
                    )
                continue
            self.live.pop(tid, None)
            changed = True
            if obs.phase == "Succeeded" and obs.loss is not None:
                source: api.ResultSource = (
                    "simulated" if isinstance(self.backend, SimulatedBackend) else "results-file"
                )
                self.states[tid] = s.finish(obs.loss, obs.metrics, source)
            elif obs.phase == "Interrupted":
                self.states[tid] = TrialState(phase="Pending", attempts=max(s.attempts - 1, 0))
            else:
                self.states[tid] = s.fail(obs.error or "failed", permanent=obs.permanent)
        decision = engine.decide(self.engine_spec, self.plan, self.states, self.fitted)
        self.skipped = frozenset(decision.skipped)
        for c in decision.cancels:
            self.backend.cancel(c.trial_id)
            s = self.states.get(c.trial_id, TrialState())
            self.states[c.trial_id] = s.fail(f"cancelled: {c.reason}")
            changed = True
        for launch in decision.launches:
            t = launch.trial
            share = self.packing.gpu_share(t)  # packed: a share of one GPU
            if not self.backend.can_start(share):  # GPUs: never more trials than devices
                break
            workdir = self.dir / "trials" / t.id
            cfg = node_config(
                self.engine_spec,
                self.sweep.name,
                launch.node,
                str(self.dir / "stable"),
                results=str(workdir / "result.json"),
                progress=str(workdir / "progress.json"),
                checkpoint=str(workdir / "checkpoint"),
                termination_log=None,
                checkpoint_every=max(t.steps // 10, 50),
            )
            self.backend.launch(t, launch.attempt, cfg, workdir, share)
            self.states[t.id] = TrialState(phase="Starting", attempts=launch.attempt)
            changed = True
        if decision.fit_due:
            self.refit(decision.complete_budgets, final=decision.phase == "Fitting")
            changed = True
            decision = engine.decide(self.engine_spec, self.plan, self.states, self.fitted)
        if changed:
            self.write_status(decision)
            self.save()
        return decision

    def refit(self, budgets: tuple[float, ...], final: bool = True) -> None:
        """Fit the trials of these budgets; remember the text and what it was fitted to."""
        from isoflop.fit.report import format_text

        rows = engine.results_table(self.plan, self.states)
        self.fitting = True
        try:
            self.fit, self.analysis = fit(self.spec, rows, budgets, final=final)
        finally:
            self.fitting = False
        self.fitted = budgets
        self.fit_text = None if self.analysis is None else format_text(self.analysis)
        self.fit_key = fit_key(self.spec, rows, budgets, final)

    def write_status(self, decision: engine.Decision) -> api.ScalingSweepStatus:
        status = engine.status(
            self.spec,
            self.plan,
            self.states,
            decision,
            self.fit,
            self.fitted,
            now=now(),
            previous=self.conditions,
        )
        self.conditions = status.conditions
        atomic_write(self.dir / "status.json", json.dumps(status.to_wire(), indent=1))
        return status

    def run(self, display: Display, poll: float = 0.5) -> engine.Decision:
        """Until the sweep succeeds or fails; Ctrl-C or SIGTERM stops it resumably. The run
        directory is locked until its trainers are stopped and its state and report written."""
        try:
            return self._run(display, poll)
        finally:
            self.lock.release()

    def _run(self, display: Display, poll: float) -> engine.Decision:
        interrupted: list[int] = []

        def on_signal(signum: int, frame: Any) -> None:
            interrupted.append(signum)
            if self.fitting:  # a fit holds nothing worth waiting for: stop now, refit on resume
                raise KeyboardInterrupt

        old = {n: signal.signal(n, on_signal) for n in (signal.SIGINT, signal.SIGTERM)}
        decision: engine.Decision | None = None
        try:
            while True:
                decision = self.step()
                display.update(self, decision)
                if decision.phase in ("Succeeded", "Failed") or interrupted:
                    break
                if not isinstance(self.backend, SimulatedBackend):
                    time.sleep(poll)
        finally:
            for signum, handler in old.items():
                signal.signal(signum, handler)
            if interrupted or decision is None or decision.phase not in ("Succeeded", "Failed"):
                display.note("stopping: running trials save checkpoints ...")
                self.backend.shutdown()
                for tid, s in self.states.items():
                    if s.phase in engine.ACTIVE:
                        self.states[tid] = TrialState(
                            phase="Pending", attempts=max(s.attempts - 1, 0)
                        )
                failing = sys.exc_info()[0] is not None
                try:
                    self.save()
                except OSError:
                    if not failing:  # the first error (a full disk) says it all: no second one
                        raise
        if interrupted:
            raise KeyboardInterrupt
        assert decision is not None
        self.report(decision)
        return decision

    # -- report -----------------------------------------------------------------------------------

    def report(self, decision: engine.Decision) -> Any:
        """Write status, trial table, plots and report.md; returns the final Analysis or None."""
        status = self.write_status(decision)
        # the evaluator's other metrics (fid, bpd), as columns `isoflop fit` reads as metrics
        metrics = sorted({k for s in self.states.values() for k, _ in s.metrics if k != "loss_se"})
        with open(self.dir / "trials.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                [
                    "id",
                    "budget",
                    "depth",
                    "width",
                    "params",
                    "tokens",
                    "steps",
                    "phase",
                    "attempts",
                    "loss",
                    "loss_se",
                    *metrics,
                ]
            )
            for t in self.plan.trials:
                s = self.states.get(t.id, TrialState())
                phase = "Skipped" if t.id in decision.skipped else s.phase
                w.writerow(
                    [
                        t.id,
                        t.budget,
                        t.depth,
                        t.width,
                        t.params,
                        t.tokens,
                        t.steps,
                        phase,
                        s.attempts,
                        "" if s.loss is None else s.loss,
                        dict(s.metrics).get("loss_se", ""),
                        *(dict(s.metrics).get(m, "") for m in metrics),
                    ]
                )
        plots: list[Path] = []
        rows = engine.results_table(self.plan, self.states)
        stored = self.fit_key == fit_key(self.spec, rows, self.fitted, True)
        if self.analysis is None and len(self.fitted) >= 2 and not stored:
            self.refit(self.fitted)  # resumed with results the stored fit has not seen
        analysis = self.analysis
        if analysis is None and stored:  # a finished run, resumed: its fit and plots stand
            plots = sorted((self.dir / "plots").glob("*.png"))
        if analysis is not None:
            from isoflop.fit import Points
            from isoflop.fit.plots import plot_all

            rows = [
                r
                for r in engine.results_table(self.plan, self.states)
                if r["budget"] in self.fitted
            ]
            plots = plot_all(Points.from_rows(rows), analysis, self.dir / "plots")
        atomic_write(self.dir / "report.md", report_markdown(self, status, self.fit_text))
        self.plots = plots
        return analysis


def fit_key(
    spec: api.ScalingSweepSpec,
    rows: list[dict[str, float]],
    budgets: tuple[float, ...],
    final: bool,
) -> str:
    """What a fit depends on: the results of its budgets, the fit settings, the code's version."""
    chosen = [r for r in rows if r["budget"] in budgets]
    data = [chosen, spec.fit.to_wire(), final, __version__]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def report_markdown(run: Run, status: api.ScalingSweepStatus, fit_text: str | None) -> str:
    lines = [
        f"# isoflop sweep `{run.sweep.name}`",
        "",
        f"- phase: **{status.phase}** ({status.progress} trials finished, "
        f"{status.counts.failed} failed, {status.counts.infeasible} infeasible)",
        f"- model family: {run.spec.model.family}; FLOPs counted as {run.spec.flops_accounting}",
        f"- budgets: {', '.join(format_flops(b) for b in run.spec.budgets)}",
        f"- wall time: {run.elapsed / 60:.1f} min",
        *strategy_lines(run.spec, status.strategy),
        "",
    ]
    if fit_text is not None:
        lines += [
            "## Fitted laws",
            "",
            "```",
            fit_text,
            "```",
            "",
            "![isoFLOP curves](plots/isoflop.png)",
            "",
            "![laws](plots/laws.png)",
            "",
        ]
    lines += [
        "## Trials",
        "",
        "| trial | params | tokens | phase | attempts | loss | trained as |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for r in status.trials:
        loss = "" if r.loss is None else f"{r.loss:.4f}"
        how = {
            "branch": f"cooldown from {r.branched_from} at step {r.branch_step}",
            "stable": "stable run (not a fit point)",
        }.get(r.kind or "", "from scratch")
        lines.append(
            f"| {r.id} | {r.params:,} | {r.tokens:,} | {r.phase} | {r.attempts} | {loss} | {how} |"
        )
    return "\n".join(lines) + "\n"


def strategy_lines(spec: api.ScalingSweepSpec, st: api.StrategyStatus | None) -> list[str]:
    """The report's account of what the strategy trained and saved."""
    if st is None:
        return []
    parts = []
    if spec.strategy.wsd_branches is not None:
        w = spec.strategy.wsd_branches
        parts.append(
            f"{st.branches} trials as WSD cooldown branches ({w.cooldown:g} of their steps, "
            f"{w.decay_shape}) from {st.stable_segments} stable-run segments"
        )
    if spec.strategy.adaptive is not None:
        parts.append(f"{st.skipped} trials left out by the adaptive ladder")
    return [
        f"- strategy: {'; '.join(parts)}",
        f"- compute: {format_flops(st.planned_flops)} FLOPs planned, "
        f"{st.compute_fraction:.3f} of the full grid from scratch "
        f"({format_flops(st.full_grid_flops)}); {format_flops(st.spent_flops)} spent",
    ]


# ------------------------------------------------------------------------------------------------
# display


class Display:
    """Live progress on a terminal; one line per event otherwise."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        # sys.stdout when called, not when this module was imported (a test's capture, closed)
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.lines = 0
        self.seen: dict[str, str] = {}

    def note(self, text: str) -> None:
        self.clear()
        print(text, file=self.stream, flush=True)

    def clear(self) -> None:
        if self.live and self.lines:
            self.stream.write(f"\x1b[{self.lines}F\x1b[J")
            self.lines = 0

    def update(self, run: Run, decision: engine.Decision) -> None:
        c = decision.counts
        head = (
            f"{run.sweep.name}: {decision.phase}  done {c.get('succeeded', 0)}  running "
            f"{c.get('running', 0)}  failed {c.get('failed', 0)}  total {c.get('total', 0)}  "
            f"elapsed {fmt_time(run.elapsed)}  eta {fmt_time(eta(run))}"
        )
        if not self.live:
            for tid, s in sorted(run.states.items()):
                label = s.phase if s.phase != "Succeeded" else f"Succeeded loss {s.loss:.4f}"
                if self.seen.get(tid) != label and s.phase != "Running":
                    self.seen[tid] = label
                    msg = f" ({s.error})" if s.phase == "Failed" and s.error else ""
                    print(
                        f"[{fmt_time(run.elapsed)}] {tid}: {label}{msg}",
                        file=self.stream,
                        flush=True,
                    )
            key = f"fit:{run.fitted}"
            if run.fit is not None and self.seen.get("fit") != key:
                self.seen["fit"] = key
                print(
                    f"[{fmt_time(run.elapsed)}] fitted laws on budgets "
                    f"{', '.join(format_flops(b) for b in run.fitted)}: {law_line(run.fit)}",
                    file=self.stream,
                    flush=True,
                )
            return
        lines = [head]
        for tid, obs in sorted(run.live.items()):
            if obs.step is not None and obs.steps:
                bar = "#" * int(20 * obs.step / obs.steps)
                loss = "" if obs.current_loss is None else f" loss {obs.current_loss:.4f}"
                lines.append(f"  {tid:<14} [{bar:<20}] {obs.step}/{obs.steps}{loss}")
            else:
                lines.append(f"  {tid:<14} starting")
        if run.fit is not None:
            lines.append(f"  laws: {law_line(run.fit)}")
        self.clear()
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self.lines = len(lines)


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
        if run.states.get(n.id, TrialState()).phase in ("Succeeded", "Failed")
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
