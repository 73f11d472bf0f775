"""The runner killed with SIGKILL at random points, 10 times, then run to the end: the run
directory's lock, the trainers' process records and the recovery of what a dead runner left.

Trainers outlive a killed runner (they run in their own sessions). After every kill the next runner
must stop them before it launches anything, so no trial ever has two trainers at once, and must keep
the results of trials that finished while no runner watched, so no finished trial is trained again.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
from pathlib import Path

import yaml

from isoflop.local.backends import stop_trials, trial_processes
from tests.integration.test_run import isoflop, write_tiny


def trainers(run_dir: Path) -> dict[str, int]:
    """How many trainers each trial has: process trees among the processes that carry its folder
    in their environment, as the runner finds them (torchrun's agent and its ranks form one tree;
    a rank whose agent is gone is a tree of its own)."""
    out = {}
    found = trial_processes(f.resolve() for f in (run_dir / "trials").glob("*"))
    for folder, listed in found.items():
        pids = set(listed)
        roots = 0
        for pid in pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            roots += parent not in pids
        if roots:
            out[folder.name] = roots
    return out


def successes(run_dir: Path) -> dict[str, int]:
    """Trials with a succeeded result, and how many launches their log had when it was seen."""
    out = {}
    for result in (run_dir / "trials").glob("*/result.json"):
        try:
            ok = json.loads(result.read_text()).get("status") == "succeeded"
        except (OSError, ValueError):
            continue
        if ok:
            out[result.parent.name] = (result.parent / "log.txt").read_text().count("--- attempt")
    return out


def test_ten_sigkills_of_the_runner_leave_no_duplicate_trainer_and_no_retrained_trial(
    tmp_path: Path,
) -> None:
    # the tiny sweep on [6e10, 2e11], which a fast machine finished only after 18 kills that came
    # 1 to 8 s apart (81 s of runner time): 10 kills 2 to 5 s apart (35 s) never reach its end
    manifest = write_tiny(tmp_path / "tiny.yaml")
    sweep = yaml.safe_load(manifest.read_text())
    sweep["spec"]["budgets"] = [6e10, 2e11]
    manifest.write_text(yaml.safe_dump(sweep))
    run_dir = tmp_path / "run"
    cmd = isoflop("run", str(manifest), "--run-dir", str(run_dir), "--plain")
    rng = random.Random(20261130)
    first_seen: dict[str, int] = {}
    most = 0
    said = ""
    kills = 0
    while kills < 10:
        log = open(tmp_path / f"runner-{kills}.log", "w")  # noqa: SIM115 - closed below
        runner = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + rng.uniform(2.0, 5.0)
        while time.monotonic() < deadline and runner.poll() is None:
            groups = trainers(run_dir)
            assert all(n == 1 for n in groups.values()), groups  # one trainer per trial, never two
            most = max(most, len(groups))
            for tid, launches in successes(run_dir).items():
                first_seen.setdefault(tid, launches)
            time.sleep(0.1)
        finished = runner.poll() is not None
        runner.kill()
        runner.wait()
        log.close()
        said += (tmp_path / f"runner-{kills}.log").read_text()
        if finished:  # the sweep ended before this kill: nothing left to interrupt
            break
        kills += 1

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    said += out.stdout
    status = json.loads((run_dir / "status.json").read_text())
    assert status["phase"] == "Succeeded"
    assert status["progress"] == "6/6"  # none lost
    assert not trainers(run_dir)  # and none left running
    assert most <= 2  # parallelism: never more trials at once than the spec allows
    for tid, launches in first_seen.items():  # a result once written is never trained again
        log = (run_dir / "trials" / tid / "log.txt").read_text()
        assert log.count("--- attempt") == launches, tid
    stopped = re.findall(r"stopped trial (\S+)'s trainer", said)
    print(f"{kills} kills; {len(stopped)} orphaned trainers stopped; "
          f"{len(first_seen)} trials finished during the kills")  # fmt: skip
    assert kills == 10
    assert stopped  # the recovery was exercised, not only the lock
    # a second runner on the same directory is refused while one works there
    busy = isoflop("run", str(manifest), "--run-dir", str(tmp_path / "busy"), "--plain")
    runner = subprocess.Popen(busy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (tmp_path / "busy" / "state.json").exists():  # it holds the lock by then
            assert runner.poll() is None
            time.sleep(0.1)
        other = subprocess.run(busy, capture_output=True, text=True, timeout=120, check=False)
    finally:
        runner.kill()
        runner.wait()
        # and the trainers it left, stopped as a next runner stops them (not trained to the end)
        stop_trials([f.resolve() for f in (tmp_path / "busy" / "trials").glob("*")], grace=0)
    assert other.returncode == 2
    held = f"{(tmp_path / 'busy').resolve()} is in use by another isoflop run (pid {runner.pid}"
    assert held in other.stderr, other.stderr
    assert not trainers(tmp_path / "busy")
