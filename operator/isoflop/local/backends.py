"""Where `isoflop run` trains its trials: backends that launch, observe and stop them.

    SimulatedBackend   each trial's loss drawn from a known law with noise; instant (--simulate)
    LocalBackend       each trial the trainer's torchx launch description run with torchrun, on
                       GPUs of its own (isoflop.local.devices) or the CPU

A backend reports what it sees as Observations; the run (isoflop.local.runner) owns the state.

A local trainer outlives a runner killed with SIGKILL: torchrun's agent runs in its own session and
starts each rank in another. Every process of a trial carries its folder in its environment
(ISOFLOP_TRIAL), and each launch records the agent's pid in `trials/<id>/pid.json`. The next run's
`recover` stops every process a dead runner left (SIGTERM: the trainers checkpoint) before anything
is launched again, and keeps the results of trials that finished meanwhile: no trial is trained
twice at once, or trained again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Protocol

from isoflop import api
from isoflop.local.devices import DevicePool, visible_devices
from isoflop.sweep.forecast import Law, simulated_loss
from isoflop.sweep.plan import Trial
from isoflop_trainer.config import TrainConfig
from isoflop_trainer.data.store import atomic_write

ONE = Fraction(1)  # a trial's GPUs whole (not packed)
PIDFILE = "pid.json"  # a running trainer's agent pid, attempt and GPUs, in its trial's folder
TRIAL_ENV = "ISOFLOP_TRIAL"  # every process of a trial has its folder in its environment

ObservedPhase = Literal["Running", "Succeeded", "Failed", "Interrupted"]


@dataclass
class Observation:
    phase: ObservedPhase
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    step: int | None = None
    steps: int | None = None
    current_loss: float | None = None
    permanent: bool = False  # a failure no retry can mend (the trainer's class): not retried


class Backend(Protocol):
    def launch(
        self, trial: Trial, attempt: int, config: TrainConfig, workdir: Path, share: Fraction = ONE
    ) -> None: ...
    def observe(self) -> dict[str, Observation]: ...
    def cancel(self, trial_id: str) -> None: ...
    def shutdown(self) -> None: ...
    def can_start(self, share: Fraction = ONE) -> bool:
        """Whether a trial taking `share` of a GPU slot (1: its GPUs whole) can start now."""
        ...

    @property
    def packs(self) -> bool:
        """Whether trials can share a GPU here (there are GPUs to share)."""
        ...

    def recover(self, trials: Path, finished: set[str]) -> list[str]:
        """Before the first launch: deal with what a dead runner left in `trials`; returns a
        line for each thing done."""
        ...


# ------------------------------------------------------------------------------------------------
# simulated backend


class SimulatedBackend:
    """Each trial's loss drawn from a known law with multiplicative noise; instant."""

    def __init__(self, law: Law, noise: float = 0.005, seed: int = 0) -> None:
        self.law, self.noise, self.seed = law, noise, seed
        self.done: dict[str, Observation] = {}

    def launch(
        self, trial: Trial, attempt: int, config: TrainConfig, workdir: Path, share: Fraction = ONE
    ) -> None:
        loss = simulated_loss(
            self.law,
            trial.id,
            trial.params,
            trial.tokens,
            self.noise,
            self.seed,
            rate=config.learning_rate,
            batch=config.global_batch_size,
        )
        self.done[trial.id] = Observation("Succeeded", loss=loss)

    def observe(self) -> dict[str, Observation]:
        out, self.done = self.done, {}
        return out

    def cancel(self, trial_id: str) -> None:
        self.done.pop(trial_id, None)

    def shutdown(self) -> None:
        self.done.clear()

    def can_start(self, share: Fraction = ONE) -> bool:
        return True

    packs = False

    def recover(self, trials: Path, finished: set[str]) -> list[str]:
        return []


# ------------------------------------------------------------------------------------------------
# local backend


class LocalBackend:
    """Trials as local processes: the trainer's torchx launch description run with torchrun, each
    on GPUs of its own from the pool (isoflop.local.devices), or on the CPU."""

    def __init__(self, parallelism: int, pool: DevicePool) -> None:
        self.procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self.pool = pool
        self.threads = max(1, (os.cpu_count() or 1) // max(parallelism, 1))
        self.recovered: dict[str, Observation] = {}

    def recover(self, trials: Path, finished: set[str]) -> list[str]:
        said = []
        left = trial_processes(p for p in trials.glob("*") if p.is_dir())
        stop_trials([w for w, pids in left.items() if pids])  # all at once: one grace period
        for workdir, pids in sorted(left.items()):
            tid = workdir.name
            if pids:
                said.append(
                    f"stopped trial {tid}'s trainer ({len(pids)} processes), left running by a "
                    "runner that died"
                )
            (workdir / PIDFILE).unlink(missing_ok=True)
            if tid in finished or not (workdir / "result.json").exists():
                continue
            obs = result_observation(workdir)  # launch removes older results: this is the last
            if obs.phase == "Succeeded":
                self.recovered[tid] = obs
                said.append(f"trial {tid} finished while no runner watched it: result kept")
        return said

    def can_start(self, share: Fraction = ONE) -> bool:
        return self.pool.fits(share)

    @property
    def packs(self) -> bool:
        return self.pool.per_trial > 0  # there are GPUs, and trials use them

    def launch(
        self, trial: Trial, attempt: int, config: TrainConfig, workdir: Path, share: Fraction = ONE
    ) -> None:
        from isoflop_trainer.component import trial as component

        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "result.json").unlink(missing_ok=True)  # a stale result must not be read
        (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
        devices = self.pool.acquire(trial.id, share)
        app = component(config.to_dict(), image="local", name=trial.id, gpus_per_node=len(devices))
        role = app.roles[0]
        threads = max(1, int(self.threads * share))  # packed: its share of a slot's cores
        env = {**os.environ, **role.env, "OMP_NUM_THREADS": str(threads)}
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)  # its own GPUs only; "" is the CPU
        env[TRIAL_ENV] = str(workdir)  # how a later runner finds every process of this trial
        cmd = [sys.executable, "-m", "isoflop_trainer.launch", *role.args]
        on = f"GPU {','.join(devices)}" if devices else "CPU"
        if devices and share < 1:
            on += f" (packed: {share} of it)"
        with open(workdir / "log.txt", "ab") as log:
            log.write(f"--- attempt {attempt} on {on}: {' '.join(cmd[:8])} ...\n".encode())
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
                start_new_session=True,
            )
        self.procs[trial.id] = (proc, workdir)
        record = {
            "pid": proc.pid,
            "attempt": attempt,
            "devices": list(devices),
            "share": str(share),
        }
        atomic_write(workdir / PIDFILE, json.dumps(record))

    def observe(self) -> dict[str, Observation]:
        out, self.recovered = self.recovered, {}
        for tid, (proc, workdir) in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                progress = read_json(workdir / "progress.json")
                out[tid] = Observation(
                    "Running",
                    step=progress.get("step"),
                    steps=progress.get("steps"),
                    current_loss=progress.get("loss"),
                )
                continue
            del self.procs[tid]
            self.pool.release(tid)
            (workdir / PIDFILE).unlink(missing_ok=True)
            out[tid] = result_observation(workdir)
        return out

    def cancel(self, trial_id: str) -> None:
        entry = self.procs.pop(trial_id, None)
        if entry is not None:
            stop_trials([entry[1]], [entry[0]])
        self.pool.release(trial_id)

    def shutdown(self) -> None:
        stop_trials([w for _, w in self.procs.values()], [p for p, _ in self.procs.values()])
        for tid in self.procs:
            self.pool.release(tid)
        self.procs.clear()


def detect_gpus() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return (
        sum(line.startswith("GPU ") for line in out.stdout.splitlines())
        if out.returncode == 0
        else 0
    )


def trial_processes(workdirs: Iterable[Path]) -> dict[Path, list[int]]:
    """The live processes of each trial, in one pass over /proc: every process whose environment
    carries its folder as ISOFLOP_TRIAL (torchrun's agent and its ranks, which run in sessions of
    their own). Linux's /proc; elsewhere none are found and only the agents' process groups are
    signalled."""
    markers = {f"{TRIAL_ENV}={w}".encode(): w for w in workdirs}
    out: dict[Path, list[int]] = {w: [] for w in markers.values()}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2 :][:1] in ("Z", "X"):
            continue
        for var in environ.split(b"\0"):
            if var in markers:
                out[markers[var]].append(int(entry.name))
                break
    return out


def _signal_all(pids: list[int], sig: signal.Signals, groups: set[int]) -> None:
    """`sig` to each process outside `groups`, the process groups already signalled: a second
    SIGTERM to torchrun's agent while it handles the first breaks its shutdown with a traceback."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) not in groups:
                os.kill(pid, sig)


def stop_trials(
    workdirs: list[Path],
    procs: Sequence[subprocess.Popen[bytes]] = (),
    grace: float = 60.0,
) -> None:
    """Stop trials' trainers: SIGTERM to each of their processes (the trainers checkpoint), SIGKILL
    to what is left after `grace` seconds; returns once none is alive. `procs`, the agents this
    process started, are signalled by process group instead, and reaped; each process gets one
    signal a round."""

    def alive() -> list[int]:
        for p in procs:
            p.poll()  # reap: a zombie is not alive
        return [pid for pids in trial_processes(workdirs).values() for pid in pids]

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        groups = set()
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, sig)
                    groups.add(p.pid)  # each agent leads a session (and group) of its own
        _signal_all(alive(), sig, groups)
        deadline = time.monotonic() + wait
        while (alive() or any(p.poll() is None for p in procs)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not alive() and all(p.poll() is not None for p in procs):
            return


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def result_observation(workdir: Path) -> Observation:
    """What a finished trial process left behind."""
    result = read_json(workdir / "result.json")
    status = result.get("status")
    if status == "succeeded" and isinstance(result.get("eval_loss"), int | float):
        metrics = {
            k.removeprefix("eval_"): float(v)
            for k, v in result.items()
            if k in ("eval_bpd", "eval_fid", "eval_loss_se") and isinstance(v, int | float)
        }
        return Observation("Succeeded", loss=float(result["eval_loss"]), metrics=metrics)
    if status == "preempted":
        return Observation("Interrupted", error=result.get("error"))
    if status == "failed":
        return Observation(
            "Failed", error=str(result.get("error")), permanent=result.get("permanent") is True
        )
    try:
        log = (workdir / "log.txt").read_text(errors="replace").splitlines()
    except OSError:
        log = []
    said = [
        line for line in log if line.startswith(("isoflop-train:", "Traceback", "RuntimeError"))
    ]
    last = (said or [line for line in log if line.strip() and not line.startswith("---")] or [""])[
        -1
    ]
    return Observation("Failed", error=f"the trainer exited without a result: {last.strip()}")


def make_backend(
    kind: str,
    spec: api.ScalingSweepSpec,
    law: Law,
    noise: float,
    gpus: tuple[str, ...] | None = None,
) -> Backend:
    """`gpus`: the devices to use (--gpus); None: CUDA_VISIBLE_DEVICES, else every GPU found.
    Raises DeviceError when a trial needs more GPUs than there are."""
    if kind == "simulated":
        return SimulatedBackend(law, noise, spec.fit.seed)
    devices = visible_devices(os.environ, detect_gpus()) if gpus is None else gpus
    return LocalBackend(spec.parallelism, DevicePool(devices, spec.resources.gpus_per_node))
