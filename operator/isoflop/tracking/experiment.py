"""A sweep in MLflow: the sweep is an experiment, each budget a parent run, each trial a child run
(the trainer's own, `isoflop_trainer.components.tracking`), the fitted laws a run of their own.

The controller (`isoflop run`, the operator) owns the experiment, the budgets' runs and the fit's
run; every call goes through a `Tracker`, so a tracking server that is down or refuses never holds
up the sweep: what it never took is said in the status (`status.tracking.notLogged`).

Runs are found again by their key tag (the sweep's uid and what the run is), so a restarted
controller, or a resumed `isoflop run`, continues the same runs rather than making new ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from isoflop import api
from isoflop_trainer.components.tracking import KEY_TAG, PARENT_TAG, Record, Tracker, client_for

NOT_LOGGED_LIMIT = 64  # lines of status.tracking.notLogged (the status stays small)


def tracking_uri(
    spec: api.ScalingSweepSpec, environ: Mapping[str, str], variable: str
) -> str | None:
    """spec.tracking.mlflow.trackingUri, else the environment's `variable` (MLFLOW_TRACKING_URI
    locally, the installation's default on a cluster); None: not tracked."""
    mlflow = spec.tracking.mlflow
    return (mlflow.tracking_uri if mlflow else None) or environ.get(variable) or None


def resolve_uri(spec: api.ScalingSweepSpec, environ: Mapping[str, str] = os.environ) -> str | None:
    """The tracking server of a local sweep (`tracking_uri` with MLFLOW_TRACKING_URI); ValueError
    when the spec asks for MLflow and names no server anywhere."""
    uri = tracking_uri(spec, environ, "MLFLOW_TRACKING_URI")
    if spec.tracking.mlflow is not None and uri is None:
        raise ValueError(
            "spec.tracking.mlflow names no trackingUri and MLFLOW_TRACKING_URI is not set"
        )
    return uri


def experiment_name(spec: api.ScalingSweepSpec, sweep: str, namespace: str | None) -> str:
    """spec.tracking.mlflow.experiment, else isoflop/NAMESPACE/SWEEP (isoflop/SWEEP locally)."""
    mlflow = spec.tracking.mlflow
    if mlflow is not None and mlflow.experiment:
        return mlflow.experiment
    return "/".join(["isoflop", *([namespace] if namespace else []), sweep])


def experiment_url(uri: str, experiment_id: str | None) -> str | None:
    """The experiment's page in the MLflow UI of an http(s) tracking server."""
    if experiment_id is None or not uri.startswith(("http://", "https://")):
        return None
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}"


def metric_budget(budget: float) -> str:
    """A budget in a metric's name, which MLflow keeps to alphanumerics, `_-. /`: 1e12, 3e22."""
    return f"{budget:g}".replace("e+", "e")


def fit_metrics(fit: api.FitResult) -> dict[str, float]:
    """The fitted laws as MLflow metrics: each law's exponent and coefficient with their
    intervals, the parametric law, and the predictions (N*, D*, loss) at each budget asked."""
    out: dict[str, float] = {}
    laws = fit.laws
    for name in ("params", "tokens", "loss"):
        law: api.PowerLaw | None = getattr(laws, name)
        if law is None:
            continue
        out[f"{name}_exponent"] = law.exponent
        out[f"{name}_coefficient"] = law.coefficient
        for kind, interval in (
            ("exponent", law.exponent_interval),
            ("coefficient", law.coefficient_interval),
        ):
            if interval is not None:
                out[f"{name}_{kind}_low"] = interval.low
                out[f"{name}_{kind}_high"] = interval.high
    if laws.loss_saturating is not None:
        out["loss_irreducible"] = laws.loss_saturating.irreducible
        out["loss_decay"] = laws.loss_saturating.decay
    if fit.parametric is not None:
        for k, v in fit.parametric.model_dump(by_alias=True).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[f"parametric_{k}"] = float(v)
    for p in fit.predictions:
        for name in ("params", "tokens", "loss"):
            estimate: api.Estimate | None = getattr(p, name)
            if estimate is not None:
                out[f"predicted_{name}_at_{metric_budget(p.budget)}"] = estimate.value
    out["budgets_fitted"] = float(len(fit.budget_fits))
    return out


def budget_metrics(fit: api.BudgetFit) -> dict[str, float | None]:
    """One budget's isoFLOP parabola, for its parent run."""
    return {
        "params_opt": fit.params_opt,
        "tokens_opt": fit.tokens_opt,
        "loss_opt": fit.loss_opt,
        "points": float(fit.points),
        "bracketed": 1.0 if fit.bracketed else 0.0,
    }


@dataclass
class SweepTracking:
    """The controller's side of one sweep's experiment."""

    uri: str
    experiment: str
    sweep: str
    uid: str
    namespace: str | None = None
    flush_seconds: float = 10.0
    client: Callable[[str], Any] = client_for  # the MlflowClient factory
    budgets: dict[float, Tracker] = field(default_factory=dict)
    fit_run: Tracker | None = None
    refits: int = 0
    not_logged: list[str] = field(default_factory=list)

    def key(self, what: str) -> str:
        return f"{self.uid}/{what}"

    def tags(self, kind: str) -> dict[str, str]:
        tags = {"isoflop.sweep": self.sweep, "isoflop.uid": self.uid, "isoflop.kind": kind}
        if self.namespace:
            tags["isoflop.namespace"] = self.namespace
        return tags

    def open(self, budgets: Iterable[float]) -> None:
        """Begin the budgets' runs and the fit's (found again if an earlier controller made
        them): trials launched meanwhile nest under them by key."""
        for budget in budgets:
            self.budget_run(budget)
        if self.fit_run is None:
            self.fit_run = Tracker(
                self.uri,
                self.experiment,
                self.key("fit"),
                run_name=f"{self.sweep}: fitted laws",
                tags=self.tags("fit"),
                flush_seconds=self.flush_seconds,
                client=self.client,
            )

    def budget_run(self, budget: float) -> Tracker:
        tracker = self.budgets.get(budget)
        if tracker is None:
            tags = {**self.tags("budget"), "isoflop.budget": f"{budget:g}"}
            tracker = Tracker(
                self.uri,
                self.experiment,
                self.budget_key(budget),
                run_name=f"{self.sweep}: budget {budget:g}",
                tags=tags,
                flush_seconds=self.flush_seconds,
                client=self.client,
            )
            tracker.params({"C": f"{budget:g}", "sweep": self.sweep})
            self.budgets[budget] = tracker
        return tracker

    def budget_key(self, budget: float) -> str:
        return self.key(f"budget/{budget:g}")

    def trial_fields(
        self, trial: str, budget: float, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """What a trial's TrainConfig needs to log into its budget's run (`tracking_*`)."""
        parent = self.budget_run(budget)
        tags = {**self.tags("trial"), KEY_TAG: self.key(f"trial/{trial}")}
        tags[PARENT_TAG] = self.budget_key(budget)
        return {
            "tracking_uri": self.uri,
            "tracking_experiment": self.experiment,
            "tracking_parent": parent.run_id,  # None until made: the trial finds it by key
            "tracking_tags": tags,
            "tracking_params": {k: str(v) for k, v in (params or {}).items()},
            "tracking_flush_seconds": self.flush_seconds,
        }

    def log_fit(self, fit: api.FitResult, budgets: Iterable[float], final: bool) -> None:
        """A refit's laws on the fit's run, the refit's number as the step; each fitted
        budget's parabola on its own run."""
        self.open(())
        assert self.fit_run is not None
        self.refits += 1
        self.fit_run.metrics(self.refits, {**fit_metrics(fit), "final": float(final)})
        fitted = {b.budget: b for b in fit.budget_fits}
        for budget in budgets:
            if budget in fitted:
                self.budget_run(budget).metrics(self.refits, budget_metrics(fitted[budget]))

    def log_confirmation(self, c: api.Confirmation) -> None:
        """A confirmation run's predicted loss, and what it measured once it has."""
        self.open(())
        assert self.fit_run is not None
        at = metric_budget(c.budget)
        values: dict[str, float | None] = {f"confirm_predicted_loss_at_{at}": c.predicted_loss}
        if c.measured_loss is not None:
            values[f"confirm_measured_loss_at_{at}"] = c.measured_loss
        self.fit_run.metrics(self.refits, values)

    def artifacts(self, paths: Iterable[str], folder: str | None = None) -> None:
        self.open(())
        assert self.fit_run is not None
        for path in paths:
            self.fit_run.artifact(path, folder)

    def trial_record(self, trial: str, record: Mapping[str, Any] | None) -> None:
        """What a trial's tracker said it dropped (its result's `tracking`)."""
        if not record:
            return
        for warning in record.get("warnings") or []:
            self.note(f"trial {trial}: {warning}")

    def note(self, line: str) -> None:
        if line not in self.not_logged and len(self.not_logged) < NOT_LOGGED_LIMIT:
            self.not_logged.append(line)

    def close(self, status: str | None) -> None:
        """End every run of the controller's with `status` (None: they go on, as an interrupted
        run resumes), waiting `flush_seconds` in all at most."""
        for t in self.trackers:
            t.end(status)
        deadline = time.monotonic() + self.flush_seconds
        for t in self.trackers:
            record: Record = t.wait(deadline - time.monotonic())
            for warning in record.warnings:
                self.note(f"run {t.run_name}: {warning}")

    def status(self) -> api.TrackingStatus:
        exp = next((t.record.experiment_id for t in self.trackers if t.record.experiment_id), None)
        return api.TrackingStatus(
            experiment=self.experiment,
            experiment_id=exp,
            experiment_url=experiment_url(self.uri, exp),
            fit_run_id=self.fit_run.run_id if self.fit_run else None,
            refits=self.refits,
            not_logged=list(self.not_logged),
        )

    @property
    def trackers(self) -> list[Tracker]:
        return [*([self.fit_run] if self.fit_run else []), *self.budgets.values()]
