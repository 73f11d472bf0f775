"""Strategies run by the local runner: an adaptive sweep with WSD branches stopped and resumed
(simulated), and a WSD-branch sweep trained with the real trainer whose stable run is killed
mid-segment (SIGKILL, no checkpoint on the way out)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from isoflop import api
from isoflop.local.backends import SimulatedBackend, trial_processes
from isoflop.local.runner import Display
from isoflop.local.runner import Run as LocalRun
from isoflop.sweep.forecast import Law
from isoflop.sweep.plan import plan
from isoflop.sweep.strategy import graph
from tests.integration.test_run import isoflop, paper, write_tiny

KILLED = "1e11-d01-stable"  # the longest segment: d01's stable run from 3e10's branch point on


def read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def adaptive_paper() -> api.ScalingSweep:
    sweep = paper(bootstrap=0)
    strategy = api.StrategySpec.model_validate(
        {"adaptive": {"seedBudgets": 2, "rungs": 5}, "wsdBranches": {"cooldown": 0.2}}
    )
    return sweep.model_copy(update={"spec": sweep.spec.model_copy(update={"strategy": strategy})})


def test_an_adaptive_sweep_stopped_anywhere_resumes_to_the_same_decisions(tmp_path: Path) -> None:
    whole = LocalRun(adaptive_paper(), tmp_path / "whole", SimulatedBackend(Law(), seed=1))
    assert whole.run(Display(stream=io.StringIO(), live=False)).phase == "Succeeded"
    expected = read(tmp_path / "whole" / "status.json")
    for stop_after in (3, 9, 14):  # in the seeds; while a later budget is open; near the end
        where = tmp_path / f"stopped-{stop_after}"
        first = LocalRun(adaptive_paper(), where, SimulatedBackend(Law(), seed=1))
        for _ in range(stop_after):
            first.step()
        first.close()  # a crash: what was launched and not seen to finish is launched again
        again = LocalRun(adaptive_paper(), where, SimulatedBackend(Law(), seed=1))
        assert again.run(Display(stream=io.StringIO(), live=False)).phase == "Succeeded"
        got = read(where / "status.json")
        assert got["strategy"] == expected["strategy"]
        assert got["fit"]["laws"] == expected["fit"]["laws"]
        phases = {r["id"]: (r["phase"], r.get("loss")) for r in got["trials"]}
        assert phases == {r["id"]: (r["phase"], r.get("loss")) for r in expected["trials"]}
        assert {r["attempts"] for r in got["trials"] if r["phase"] == "Succeeded"} == {1}
    assert expected["strategy"]["skipped"] > 0


def test_killing_a_stable_run_mid_segment_loses_no_finished_branch(tmp_path: Path) -> None:
    manifest = write_tiny(tmp_path / "tiny.yaml")
    m = yaml.safe_load(manifest.read_text())
    m["spec"]["strategy"] = {"wsdBranches": {"cooldown": 0.2}}
    manifest.write_text(yaml.safe_dump(m))
    spec = api.parse_sweep(m).spec
    segment = graph(spec, plan(spec).trials).by_id[KILLED]
    start, end = segment.start_step, segment.trial.steps  # 636 and 2121 for the tiny ladder
    assert end - start > 800  # room to kill it well past its first checkpoint
    run_dir = tmp_path / "run"
    trials = run_dir / "trials"
    log = open(tmp_path / "runner.log", "w")  # noqa: SIM115 - closed below
    runner = subprocess.Popen(
        isoflop("run", str(manifest), "--run-dir", str(run_dir), "--plain"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # wait until a branch has finished and the segment is past its first checkpoint
        deadline = time.monotonic() + 300
        before: dict[str, tuple[float, float]] = {}
        while True:
            assert runner.poll() is None, (tmp_path / "runner.log").read_text()
            assert time.monotonic() < deadline, "the segment never got going"
            progress = read(trials / KILLED / "progress.json") or {}
            before = {
                r.parent.name: (r.stat().st_mtime, result["eval_loss"])
                for r in trials.glob("3e10-*/result.json")
                if not r.parent.name.endswith("-stable")
                and (result := read(r))
                and result.get("status") == "succeeded"
            }
            if before and progress.get("step", 0) > start + 400:  # start: 3e10's branch point
                break
            time.sleep(0.05)
        killed_at = progress["step"]
        pids = trial_processes([(trials / KILLED).resolve()])[(trials / KILLED).resolve()]
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        assert runner.wait(timeout=600) == 0, (tmp_path / "runner.log").read_text()
    finally:
        if runner.poll() is None:
            runner.kill()
        log.close()

    state = read(run_dir / "state.json")["trials"]
    # the killed segment was retried, from its own last checkpoint: not from its start
    assert state[KILLED]["attempts"] == 2
    text = (trials / KILLED / "log.txt").read_text()
    resumed = [int(s) for s in re.findall(rf"resumed from step (\d+) of {end}", text)]
    assert resumed[0] == start  # the first attempt continued the run from the segment before
    assert start < resumed[-1] <= killed_at  # the retry: its rolling checkpoint, not its start
    # no finished branch was trained again; each branch started from its segment's checkpoint
    for tid, (mtime, loss) in before.items():
        assert state[tid]["attempts"] == 1
        result = read(trials / tid / "result.json")
        assert (trials / tid / "result.json").stat().st_mtime == mtime
        assert result["eval_loss"] == loss == state[tid]["loss"]
    status = read(run_dir / "status.json")
    assert status["phase"] == "Succeeded"
    records = {r["id"]: r for r in status["trials"]}
    for tid in ("3e10-d01", "3e10-d02", "3e10-d03", "1e11-d01", "1e11-d02", "1e11-d03"):
        result = read(trials / tid / "result.json")
        record = records[tid]
        assert record["kind"] == "branch"
        assert result["branched_from_step"] == record["branchStep"]
        # its own compute is its cooldown: the prefix was its stable run's
        assert result["own_flops"] < 0.25 * result["flops"]
    assert 0.6 < status["strategy"]["computeFraction"] < 0.9
    assert "cooldown from 1e11-d01-stable" in (run_dir / "report.md").read_text()


def test_plan_says_what_the_strategy_trains_and_its_share_of_the_grid(tmp_path: Path) -> None:
    manifest = yaml.safe_load(
        (Path(__file__).parents[2] / "examples/paper-in-context.yaml").read_text()
    )
    manifest["spec"]["strategy"] = {"wsdBranches": {"cooldown": 0.2}}
    path = tmp_path / "wsd.yaml"
    path.write_text(yaml.safe_dump(manifest))
    out = subprocess.run(isoflop("plan", str(path)), capture_output=True, text=True, check=True)
    # 14 rungs x 6 budgets: one segment per branch point; 0.8 x 6/11 + 0.2 of the grid
    assert "84 stable-run segments in all" in out.stdout
    assert "0.636 of the grid above" in out.stdout
