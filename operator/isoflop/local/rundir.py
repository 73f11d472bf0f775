"""The run directory of `isoflop run`: what it holds, and the state that makes a run resumable.

    sweep.yaml      the manifest the run was last started with (what `isoflop confirm` reads)
    state.json      every trial's state and the fitted budgets; rewritten after every change
    status.json     the ScalingSweep status document (what the operator writes to the resource)
    trials.csv      the trial table;  report.md  a short report;  plots/  isoFLOP curves and laws
                    (isoflop.local.report)
    trials/<id>/    config.json, log.txt, progress.json, result.json, checkpoint/ of each trial,
                    and pid.json while its trainer runs (a stable segment's trial folder too)
    stable/<run>/   with WSD branches: the checkpoints of each rung's stable run, which its
                    segments continue and its branches start from
    run.lock        held (flock) by the one run working here, naming it (isoflop.local.runlock)

Every file is written whole (write, then rename), so a crash leaves the last complete version.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from isoflop import api
from isoflop.local.backends import read_json
from isoflop.local.runlock import LockedError, RunLock
from isoflop.sweep import engine
from isoflop.sweep.engine import TrialState
from isoflop_trainer.data.store import atomic_write


class RunError(Exception):
    """A problem with the run itself (its directory, its state); one sentence."""


@dataclass
class RunState:
    """What a run remembers across stops: the trials' states and the latest fit."""

    trials: dict[str, TrialState] = field(default_factory=dict)
    fitted: tuple[float, ...] = ()  # the budgets the latest fit used
    fit: api.FitResult | None = None
    fit_text: str | None = None  # the fit as text, kept with the results it came from
    fit_key: str | None = None  # what that fit was computed from (isoflop.local.report.fit_key)
    conditions: list[api.Condition] = field(default_factory=list)
    elapsed_before: float = 0.0  # seconds spent by earlier sessions of this run
    # spec.confirm's runs as predicted after the final fit (before any starts), with verdicts
    confirmations: list[api.Confirmation] = field(default_factory=list)
    # this run's identity, as a cluster sweep's metadata.uid: its MLflow runs are found by it
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_json(self, sweep: str, elapsed: float) -> dict[str, Any]:
        return {
            "sweep": sweep,
            "trials": {tid: asdict(s) for tid, s in sorted(self.trials.items())},
            "fitted": list(self.fitted),
            "fit": self.fit.to_wire() if self.fit else None,
            "fitText": self.fit_text,
            "fitKey": self.fit_key,
            "conditions": [c.to_wire() for c in self.conditions],
            "confirmations": [c.to_wire() for c in self.confirmations],
            "elapsed_seconds": elapsed,
            "uid": self.uid,
        }

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> RunState:
        """A saved state; a trial that was running when the runner stopped is Pending again,
        its interrupted attempt not counted (it resumes from its checkpoint)."""
        trials = {}
        for tid, fields in saved.get("trials", {}).items():
            fields["metrics"] = tuple(tuple(m) for m in fields.get("metrics", ()))
            s = TrialState(**fields)
            if s.phase in engine.ACTIVE:
                s = TrialState(phase="Pending", attempts=max(s.attempts - 1, 0), loss=s.loss)
            trials[tid] = s
        return cls(
            trials=trials,
            fitted=tuple(saved.get("fitted", ())),
            fit=api.FitResult.model_validate(saved["fit"]) if saved.get("fit") else None,
            fit_text=saved.get("fitText"),
            fit_key=saved.get("fitKey"),
            conditions=[api.Condition.model_validate(c) for c in saved.get("conditions", [])],
            elapsed_before=float(saved.get("elapsed_seconds", 0.0)),
            confirmations=[
                api.Confirmation.model_validate(c) for c in saved.get("confirmations", [])
            ],
            **({"uid": str(saved["uid"])} if saved.get("uid") else {}),
        )


class RunDirectory:
    """One sweep's run directory, held (locked) while open."""

    def __init__(self, path: Path, sweep: str) -> None:
        self.path = path.resolve()  # trials run in their own folders: paths must be absolute
        self.sweep = sweep
        self.lock = RunLock(self.path)

    def open(self) -> RunState:
        """Create or reopen the directory, lock it, and read what an earlier run left."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise RunError(
                f"cannot write to the run directory {self.path}: {err.strerror or err}"
            ) from None
        try:
            self.lock.acquire()
        except LockedError as err:
            raise RunError(str(err)) from None
        saved = read_json(self.path / "state.json")
        if not saved:
            return RunState()
        if saved.get("sweep") != self.sweep:
            self.lock.release()
            raise RunError(
                f"{self.path} holds the run of sweep {saved.get('sweep')!r}, "
                f"not {self.sweep!r}; choose another --run-dir"
            )
        return RunState.from_json(saved)

    def save(self, state: RunState, elapsed: float) -> None:
        atomic_write(
            self.path / "state.json", json.dumps(state.to_json(self.sweep, elapsed), indent=1)
        )

    def write_manifest(self, sweep: api.ScalingSweep) -> None:
        import yaml

        atomic_write(self.path / "sweep.yaml", yaml.safe_dump(sweep.to_wire(), sort_keys=False))

    def write_status(self, status: api.ScalingSweepStatus) -> None:
        atomic_write(self.path / "status.json", json.dumps(status.to_wire(), indent=1))

    def release(self) -> None:
        """Let another run use the directory (the process's end does the same)."""
        self.lock.release()

    @property
    def trials(self) -> Path:
        return self.path / "trials"

    @property
    def stable(self) -> Path:
        return self.path / "stable"
