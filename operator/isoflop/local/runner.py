"""`isoflop run`: a sweep on this machine, the engine's decisions applied by a backend.

The run observes its trials through the backend, asks the engine what to do, applies it, refits
when budgets complete, and keeps its state in the run directory (isoflop.local.rundir) after every
change; it survives Ctrl-C, crashes and reboots. Running the same command again resumes: finished
trials are never trained again, interrupted ones continue from their checkpoints. What the run
shows while it works is isoflop.local.display; what it leaves for a reader, isoflop.local.report.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

from isoflop import api
from isoflop.local.backends import Backend, Observation, SimulatedBackend, read_json
from isoflop.local.display import Display
from isoflop.local.report import confirm_points, fit_key, report_markdown, write_trials_csv
from isoflop.local.rundir import RunDirectory, RunError, RunState
from isoflop.sweep import engine
from isoflop.sweep.confirm import is_confirmation, predict, resources_spec
from isoflop.sweep.engine import TrialState
from isoflop.sweep.families import check_status
from isoflop.sweep.packing import Packing
from isoflop.sweep.plan import Plan, format_flops, plan
from isoflop.sweep.status import results_table, sweep_status
from isoflop.sweep.strategy import graph
from isoflop.sweep.trials import fit, node_config
from isoflop.tracking.experiment import SweepTracking, experiment_name, resolve_uri
from isoflop_trainer.data.store import atomic_write

__all__ = ["Display", "Run", "RunError"]


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_spec(spec: api.ScalingSweepSpec, packs: bool) -> tuple[api.ScalingSweepSpec, list[str]]:
    """The spec the engine decides with here: packing only where trials have GPUs to share."""
    if spec.resources.packing is None or packs:
        return spec, []
    resources = spec.resources.model_copy(update={"packing": None})
    return spec.model_copy(update={"resources": resources}), [
        "spec.resources.packing shares GPUs, and this run has none: parallelism alone "
        "limits the trials at once"
    ]


class Run:
    """One sweep in one run directory: step the engine, apply its decisions, refit, report."""

    def __init__(self, sweep: api.ScalingSweep, directory: Path, backend: Backend) -> None:
        self.sweep, self.spec, self.backend = sweep, sweep.spec, backend
        self.rundir = RunDirectory(directory, sweep.name)
        self.dir = self.rundir.path
        self.plan: Plan = plan(self.spec)
        self.graph = graph(self.spec, self.plan.trials, self.plan.tuning)  # what it trains
        self.engine_spec, self.notices = local_spec(self.spec, backend.packs)
        self.packing = Packing.of(self.engine_spec)
        self.skipped: frozenset[str] = frozenset()  # what the adaptive ladder left out so far
        self.live: dict[str, Observation] = {}  # running trials' latest progress
        self.started = time.time()
        self.analysis: Any = None  # the latest fit's Analysis, in this session
        self.fitting = False  # Ctrl-C stops a fit at once rather than waiting for it
        self.plots: list[Path] = []
        self.state: RunState = self.rundir.open()
        try:
            self.tracking = self.open_tracking()
            self.rundir.write_manifest(sweep)
            finished = {t for t, s in self.state.trials.items() if s.phase == "Succeeded"}
            # what a runner killed before this one left: its trainers stopped, its results kept
            self.recovered = self.backend.recover(self.rundir.trials, finished)
        except BaseException:
            self.rundir.release()
            raise

    def close(self) -> None:
        """Let another run use the directory (the process's end does the same)."""
        self.rundir.release()

    def open_tracking(self) -> SweepTracking | None:
        """The sweep's MLflow experiment (spec.tracking.mlflow or MLFLOW_TRACKING_URI), its runs
        begun in the background; None when untracked, or simulated (its results are not
        measurements, and stay out of the tracker)."""
        try:
            uri = resolve_uri(self.spec)
        except ValueError as err:
            raise RunError(str(err)) from None
        if uri is None or isinstance(self.backend, SimulatedBackend):
            return None
        name = self.sweep.name
        tracking = SweepTracking(uri, experiment_name(self.spec, name, None), name, self.state.uid)
        budgets = [*self.spec.budgets, *self.spec.confirm]
        tracking.open(budgets)
        return tracking

    def save(self) -> None:
        self.rundir.save(self.state, self.elapsed)

    @property
    def elapsed(self) -> float:
        return self.state.elapsed_before + time.time() - self.started

    # -- one step ---------------------------------------------------------------------------------

    def decide(self) -> engine.Decision:
        s = self.state
        return engine.decide(self.engine_spec, self.plan, s.trials, s.fitted, s.confirmations)

    def step(self) -> engine.Decision:
        """Observe, decide, apply; returns the decision it applied."""
        changed = self.observe()
        decision = self.decide()
        self.skipped = frozenset(decision.skipped)
        changed |= self.cancel(decision.cancels)
        changed |= self.launch(decision.launches)
        if decision.fit_due:
            self.refit(decision.complete_budgets, final=decision.phase == "Fitting")
            changed = True
            decision = self.decide()
        if decision.confirm_due:  # stored (and saved) before the next step launches them
            self.predict_confirmations()
            changed = True
            decision = self.decide()
        if changed:
            self.write_status(decision)
            self.save()
        return decision

    def observe(self) -> bool:
        """Take in what the backend saw; True when a trial's state changed."""
        changed = False
        trials = self.state.trials
        for tid, obs in self.backend.observe().items():
            s = trials.get(tid, TrialState())
            if obs.phase == "Running":
                self.live[tid] = obs
                if s.phase != "Running":
                    trials[tid], changed = TrialState(**{**asdict(s), "phase": "Running"}), True
                continue
            self.live.pop(tid, None)
            changed = True
            if obs.phase == "Succeeded" and obs.loss is not None:
                simulated = isinstance(self.backend, SimulatedBackend)
                source: api.ResultSource = "simulated" if simulated else "results-file"
                trials[tid] = s.finish(obs.loss, obs.metrics, source)
            elif obs.phase == "Interrupted":  # stopped, not failed: resumes, no attempt counted
                trials[tid] = TrialState(phase="Pending", attempts=max(s.attempts - 1, 0))
            else:
                trials[tid] = s.fail(obs.error or "failed", permanent=obs.permanent)
        return changed

    def cancel(self, cancels: tuple[engine.Cancel, ...]) -> bool:
        for c in cancels:
            self.backend.cancel(c.trial_id)
            s = self.state.trials.get(c.trial_id, TrialState())
            self.state.trials[c.trial_id] = s.fail(f"cancelled: {c.reason}")
        return bool(cancels)

    def launch(self, launches: tuple[engine.Launch, ...]) -> bool:
        """Start what the engine asks for while the backend has room (never more trials than
        GPUs); the rest wait for the next step."""
        launched = False
        for launch in launches:
            t = launch.trial
            confirming = is_confirmation(t.id)  # never packed: resources of its own
            share = Fraction(1) if confirming else self.packing.gpu_share(t)
            if not self.backend.can_start(share):
                break
            workdir = self.rundir.trials / t.id
            tracked = {}
            if self.tracking is not None:
                extra = self.confirmation_params(t.id) if confirming else None
                tracked = self.tracking.trial_fields(t.id, t.budget, extra)
            cfg = node_config(
                resources_spec(self.engine_spec) if confirming else self.engine_spec,
                self.sweep.name,
                launch.node,
                str(self.rundir.stable),
                results=str(workdir / "result.json"),
                progress=str(workdir / "progress.json"),
                checkpoint=str(workdir / "checkpoint"),
                termination_log=None,
                checkpoint_every=max(t.steps // 10, 50),
                **tracked,
            )
            self.backend.launch(t, launch.attempt, cfg, workdir, share)
            self.state.trials[t.id] = TrialState(phase="Starting", attempts=launch.attempt)
            launched = True
        return launched

    def refit(self, budgets: tuple[float, ...], final: bool = True) -> None:
        """Fit the trials of these budgets; remember the text and what it was fitted to."""
        from isoflop.fit.report import format_text

        rows = results_table(self.plan, self.state.trials, self.spec)
        self.fitting = True
        try:
            self.state.fit, self.analysis = fit(self.spec, rows, budgets, final=final)
        finally:
            self.fitting = False
        self.state.fitted = budgets
        if self.tracking is not None and self.state.fit is not None:
            self.tracking.log_fit(self.state.fit, budgets, final)
        self.state.fit_text = None if self.analysis is None else format_text(self.analysis)
        self.state.fit_key = fit_key(self.spec, rows, budgets, final)

    def predict_confirmations(self) -> None:
        """spec.confirm's runs from the final fit: the model nearest N* and the loss to beat.
        A run resumed since its final fit refits first (the same trials give the same fit)."""
        from isoflop.fit import Points

        if self.analysis is None:
            self.refit(self.state.fitted)
        rows = results_table(self.plan, self.state.trials, self.spec)
        points = Points.from_rows([r for r in rows if r["budget"] in self.state.fitted])
        have = {c.budget for c in self.state.confirmations}
        wanted = sorted(b for b in self.spec.confirm if b not in have)
        added = predict(self.spec, self.analysis, points, wanted)
        self.state.confirmations += added
        if self.tracking is not None:
            for c in added:
                self.tracking.log_confirmation(c)

    def confirmation_params(self, trial_id: str) -> dict[str, float | None]:
        """A confirmation's own MLflow params: the loss its laws predicted."""
        c = next((c for c in self.state.confirmations if c.trial == trial_id), None)
        return {} if c is None else {"predicted_loss": c.predicted_loss}

    def write_status(self, decision: engine.Decision) -> api.ScalingSweepStatus:
        status = sweep_status(
            self.spec,
            self.plan,
            self.state.trials,
            decision,
            self.state.fit,
            self.state.fitted,
            now=now(),
            previous=self.state.conditions,
            confirmations=self.state.confirmations,
        ).model_copy(
            update={
                "model_check": check_status(self.spec),
                "tracking": self.tracking.status() if self.tracking is not None else None,
            }
        )
        self.state.conditions = status.conditions
        self.state.confirmations = status.confirmations  # with their verdicts
        self.rundir.write_status(status)
        return status

    # -- the whole run ----------------------------------------------------------------------------

    def run(self, display: Display, poll: float = 0.5) -> engine.Decision:
        """Until the sweep succeeds or fails; Ctrl-C or SIGTERM stops it resumably. The run
        directory is locked until its trainers are stopped and its state and report written."""
        interrupted: list[int] = []

        def on_signal(signum: int, frame: Any) -> None:
            interrupted.append(signum)
            if self.fitting:  # a fit holds nothing worth waiting for: stop now, refit on resume
                raise KeyboardInterrupt

        try:
            old = {n: signal.signal(n, on_signal) for n in (signal.SIGINT, signal.SIGTERM)}
            try:
                decision = self.loop(display, poll, interrupted)
            finally:
                for signum, handler in old.items():
                    signal.signal(signum, handler)
                display.close()
            if interrupted:
                raise KeyboardInterrupt
            assert decision is not None
            self.report(decision)
            return decision
        finally:
            self.rundir.release()

    def loop(self, display: Display, poll: float, interrupted: list[int]) -> engine.Decision | None:
        """Step until the sweep ends or a signal stops it; an unfinished sweep's trainers are
        stopped (they checkpoint) and its state saved, whatever ended the loop."""
        decision: engine.Decision | None = None
        try:
            while True:
                decision = self.step()
                display.update(self, decision)
                if decision.phase in ("Succeeded", "Failed") or interrupted:
                    return decision
                if not isinstance(self.backend, SimulatedBackend):
                    time.sleep(poll)
        finally:
            if interrupted or decision is None or decision.phase not in ("Succeeded", "Failed"):
                display.note("stopping: running trials save checkpoints ...")
                self.stop_trials()

    def stop_trials(self) -> None:
        self.backend.shutdown()
        if self.tracking is not None:  # its runs go on when the run resumes
            self.tracking.close(None)
        for tid, s in self.state.trials.items():
            if s.phase in engine.ACTIVE:
                self.state.trials[tid] = TrialState(
                    phase="Pending", attempts=max(s.attempts - 1, 0)
                )
        failing = sys.exc_info()[0] is not None
        try:
            self.save()
        except OSError:
            if not failing:  # the first error (a full disk) says it all: no second one
                raise

    def plot_rates(self, tuning: api.TuningStatus) -> Path:
        """plots/rates.png: each tuning rung's loss against learning rate."""
        from isoflop.fit.plots import RateCurve, plot_rates

        curves = []
        for g in tuning.groups:
            mine = [
                (t.learning_rate or 0.0, s.loss)
                for t in self.plan.tuning
                if t.budget == g.budget and t.rung == g.rung and t.tunes == "rate"
                and (s := self.state.trials.get(t.id)) is not None and s.loss is not None
            ]  # fmt: skip
            if mine:
                rates, losses = zip(*mine, strict=True)
                label = f"{g.rung} at {format_flops(g.budget)}"
                curves.append(RateCurve(label, rates, losses, g.best_learning_rate))
        (self.dir / "plots").mkdir(parents=True, exist_ok=True)
        return plot_rates(curves, self.dir / "plots" / "rates.png")

    def report(self, decision: engine.Decision) -> Any:
        """Write status, trial table, plots and report.md; returns the final Analysis or None.
        A run resumed with results its stored fit has not seen refits first."""
        status = self.write_status(decision)
        write_trials_csv(self.dir / "trials.csv", self.plan, self.state.trials, decision.skipped)
        rows = results_table(self.plan, self.state.trials, self.spec)
        stored = self.state.fit_key == fit_key(self.spec, rows, self.state.fitted, True)
        if self.analysis is None and len(self.state.fitted) >= 2 and not stored:
            self.refit(self.state.fitted)
        if self.analysis is not None:
            from isoflop.fit import Points
            from isoflop.fit.plots import plot_all

            rows = results_table(self.plan, self.state.trials, self.spec)
            points = Points.from_rows([r for r in rows if r["budget"] in self.state.fitted])
            marks = confirm_points(status.confirmations)
            self.plots = plot_all(points, self.analysis, self.dir / "plots", marks)
        elif stored:  # a finished run, resumed: its fit and plots stand
            self.plots = sorted((self.dir / "plots").glob("*.png"))
        if status.tuning is not None and status.tuning.law is not None:
            self.plots.append(self.plot_rates(status.tuning))
        markdown = report_markdown(self.sweep, status, self.state.fit_text, self.elapsed)
        atomic_write(self.dir / "report.md", markdown)
        if self.tracking is not None:
            self.finish_tracking(decision, status)
        return self.analysis

    def finish_tracking(self, decision: engine.Decision, status: api.ScalingSweepStatus) -> None:
        """The report, the trial table and the plots as the fit run's artifacts, the measured
        confirmations, and every run of the sweep's ended; then the status says what the
        tracker did not take (report.md too)."""
        tracking = self.tracking
        assert tracking is not None
        for c in status.confirmations:
            if c.measured_loss is not None:
                tracking.log_confirmation(c)
        tracking.artifacts([str(self.dir / "report.md"), str(self.dir / "trials.csv")])
        tracking.artifacts([str(p) for p in self.plots], "plots")
        for tid in sorted(self.state.trials):
            result = read_json(self.rundir.trials / tid / "result.json")
            tracking.trial_record(tid, result.get("tracking"))
        tracking.close("FINISHED" if decision.phase == "Succeeded" else "FAILED")
        status = status.model_copy(update={"tracking": tracking.status()})
        self.rundir.write_status(status)
        markdown = report_markdown(self.sweep, status, self.state.fit_text, self.elapsed)
        atomic_write(self.dir / "report.md", markdown)
