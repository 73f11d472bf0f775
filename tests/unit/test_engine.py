"""The engine: property tests over random trial outcomes, and the spec-edit rules."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from isoflop import api
from isoflop.sweep import engine
from isoflop.sweep.engine import ACTIVE, TrialState, decide
from isoflop.sweep.packing import Packing
from isoflop.sweep.plan import Plan, plan
from isoflop.sweep.status import results_table, sweep_status


def spec(**kw: Any) -> api.ScalingSweepSpec:
    base: dict[str, Any] = {
        "model": {"depths": [1, 2, 3, 4], "widthPerDepth": 32, "headDim": 32, "patchSize": 4},
        "data": {"latentShape": [3, 16, 16], "textLength": 8, "textDim": 32},
        "budgets": [3e10, 1e11, 3e11],
        "training": {"globalBatchSize": 16, "minSteps": 10},
    }
    base.update(kw)
    return api.parse_spec(base)


# "queue": a cluster's queue holds (or, once it ran, evicts) the trial: Queued, no attempt spent
OUTCOME = st.sampled_from(["succeed", "fail", "start", "succeed", "succeed", "queue"])


WSD = {"wsdBranches": {"cooldown": 0.2}}
ADAPTIVE = {"adaptive": {"seedBudgets": 2, "rungs": 3}}


@settings(max_examples=150, deadline=None)
@given(
    outcomes=st.lists(st.tuples(st.integers(0, 1000), OUTCOME), max_size=300),
    parallelism=st.integers(1, 5),
    per_trial=st.integers(0, 3),
    max_failed=st.integers(0, 4),
    strategy=st.sampled_from([{}, {}, WSD, ADAPTIVE, {**WSD, **ADAPTIVE}]),
    packed=st.sampled_from([1, 1, 2, 3]),
    tuned=st.sampled_from([False, False, True]),
)
def test_engine_invariants_over_random_outcomes(
    outcomes: list[tuple[int, str]],
    parallelism: int,
    per_trial: int,
    max_failed: int,
    strategy: dict[str, Any],
    packed: int,
    tuned: bool,
) -> None:
    """Under every strategy: parallelism and retries hold, a branch or stable segment starts
    only once the segment before it succeeded (its checkpoint exists), every sweep ends, and
    the decisions (the adaptive ladder's among them) are the same when made again from any
    saved state, as a restarted driver makes them. Packed trials (`packed` to a GPU: these rungs
    are all small) count as 1/packed of a slot. With a tuning stage (not with WSD branches, which
    train a rung's budgets at one rate), no grid trial starts before the stage's law stands."""
    tuned = tuned and "wsdBranches" not in strategy
    tuning = {"budgets": [3e10], "rungs": ["d01", "d02"], "learningRates": [1e-3, 2e-3, 4e-3]}
    s = spec(
        parallelism=parallelism,
        retries={"perTrial": per_trial, "maxFailedTrials": max_failed},
        strategy=strategy,
        resources={"packing": {"maxTrialsPerGpu": packed}},
        **({"tuning": {**tuning, "widen": 1}} if tuned else {}),
    )
    p = plan(s)
    share = Fraction(1, packed)
    assert all(Packing.of(s).share(t) == share for t in p.trials)
    states: dict[str, TrialState] = {}
    fitted: tuple[float, ...] = ()
    history: list[tuple[dict[str, TrialState], tuple[float, ...], engine.Decision]] = []
    limit = (len(p.trials) + len(p.tuning)) * (per_trial + 1) * 3 + 20
    for i in range(limit):
        d = decide(s, p, states, fitted)
        history.append((dict(states), fitted, d))
        active = [tid for tid, st_ in states.items() if st_.phase in ACTIVE]
        # parallelism is never exceeded, in slots: a packed trial is 1/packed of one
        assert (len(active) + len(d.launches)) * share <= parallelism
        for launch in d.launches:
            before = states.get(launch.trial.id, TrialState())
            assert before.phase not in ACTIVE  # never launched twice while running
            assert launch.attempt == before.attempts + 1 <= per_trial + 1  # retries stop
            if launch.node.after is not None:  # its parent's checkpoint exists
                assert states[launch.node.after].phase == "Succeeded"
            if tuned and launch.node.kind != "tuning":  # the grid waits for the stage's law
                stage = engine.resolve(s, p, states).tuning
                assert stage is not None
                assert stage.law is not None
                assert launch.trial.learning_rate is not None
        if d.fit_due:
            fitted = d.complete_budgets
        if d.phase in ("Succeeded", "Failed"):
            break
        for c in d.cancels:
            states[c.trial_id] = replace(states[c.trial_id], phase="Failed", error=c.reason)
        for launch in d.launches:
            states[launch.trial.id] = TrialState(phase="Starting", attempts=launch.attempt)
        active = sorted(tid for tid, st_ in states.items() if st_.phase in ACTIVE)
        if active:
            pick, what = outcomes[i] if i < len(outcomes) else (0, "succeed")
            tid = active[pick % len(active)]
            if what == "succeed":
                states[tid] = states[tid].finish(1.0 + 0.01 * (pick % 7), {}, "simulated")
            elif what == "fail":
                states[tid] = states[tid].fail("boom")
            elif what == "queue":
                states[tid] = replace(states[tid], phase="Queued")
            else:
                states[tid] = replace(states[tid], phase="Running")
        else:
            assert d.launches or d.fit_due, "the engine stalled"
    else:
        raise AssertionError("the sweep never ended")
    assert d.phase in ("Succeeded", "Failed")  # every sweep ends
    for snapshot, was_fitted, decision in history:  # replaying any prefix gives the same actions
        assert decide(s, p, snapshot, was_fitted) == decision


def run_all(s: api.ScalingSweepSpec, p: Plan, states: dict[str, TrialState]) -> None:
    for t in p.trials:
        states[t.id] = TrialState(phase="Succeeded", attempts=1, loss=1.0)


def test_smallest_budgets_launch_first_and_fits_come_as_budgets_complete() -> None:
    s = spec(parallelism=3)
    p = plan(s)
    d = decide(s, p, {})
    assert d.phase == "Running"
    assert [lc.trial.id for lc in d.launches] == ["3e10-d01", "3e10-d02", "3e10-d03"]
    states = {t.id: TrialState("Succeeded", 1, 1.0) for t in p.trials if t.budget < 3e11}
    d = decide(s, p, states)
    assert d.complete_budgets == (3e10, 1e11)
    assert d.fit_due
    assert d.phase == "Running"
    assert not decide(s, p, states, fitted=(3e10, 1e11)).fit_due  # idempotent once fitted
    run_all(s, p, states)
    assert decide(s, p, states, fitted=(3e10, 1e11)).phase == "Fitting"
    assert decide(s, p, states, fitted=(3e10, 1e11, 3e11)).phase == "Succeeded"


def test_too_many_failures_fail_the_sweep_and_cancel_running_trials() -> None:
    s = spec(retries={"perTrial": 1, "maxFailedTrials": 1})
    p = plan(s)
    ids = [t.id for t in p.trials]
    states = {
        ids[0]: TrialState("Failed", 2),
        ids[1]: TrialState("Failed", 1),
        ids[2]: TrialState("Running", 1),
    }
    d = decide(s, p, states)
    assert d.phase == "Running"
    assert d.gave_up == (ids[0],)
    assert any(lc.trial.id == ids[1] and lc.attempt == 2 for lc in d.launches)  # a retry
    states[ids[1]] = TrialState("Failed", 2)
    d = decide(s, p, states)
    assert d.phase == "Failed"
    assert d.reason == "TooManyFailedTrials"
    assert [c.trial_id for c in d.cancels] == [ids[2]]
    assert not d.launches


def test_spec_edits_add_trials_and_cancel_only_unstarted_removed_ones() -> None:
    s = spec()
    p = plan(s)
    states = {t.id: TrialState("Succeeded", 1, 2.0) for t in p.trials if t.budget == 3e10}
    states["3e11-d01"] = TrialState("Starting", 1)
    states["3e11-d02"] = TrialState("Running", 1)
    grown = spec(budgets=[3e10, 1e11, 1e12])  # 3e11 removed, 1e12 added
    gp = plan(grown)
    d = decide(grown, gp, states)
    assert [c.trial_id for c in d.cancels] == ["3e11-d01"]  # not started: cancelled
    assert d.counts["running"] == 1  # 3e11-d02 runs to the end, its result is kept
    assert "1e12-d01" in {t.id for t in gp.trials}
    rows = results_table(gp, states)
    assert {r["budget"] for r in rows} == {3e10}  # the finished results still count


def test_queued_trials_hold_their_slots_count_apart_and_are_cancelled_like_unstarted_ones() -> None:
    """A trial whose Job waits in Kueue's queue (not admitted yet, or evicted) counts towards
    parallelism, is counted and said apart from running ones, spends no attempt, and is cancelled
    when the spec drops its budget (it never ran)."""
    s = spec(parallelism=3)
    p = plan(s)
    ids = [t.id for t in p.trials]
    states = {
        ids[0]: TrialState("Running", 1),
        ids[1]: TrialState("Queued", 1),
        ids[2]: TrialState("Queued", 1),
    }
    d = decide(s, p, states)
    assert not d.launches  # 3 slots held: 1 running, 2 queued
    assert (d.counts["running"], d.counts["queued"], d.counts["pending"]) == (1, 2, len(ids) - 3)
    assert d.message == f"0/{len(ids)} trials finished; 1 running, 2 waiting in the queue"
    assert states[ids[1]].failed_attempts == 0  # an eviction is no failure
    st_ = sweep_status(s, p, states, d, None)
    assert (st_.counts.running, st_.counts.queued) == (1, 2)
    phases = {r.id: r.phase for r in st_.trials}
    assert (phases[ids[0]], phases[ids[1]]) == ("Running", "Queued")
    assert st_.budgets[0].queued == 2
    assert st_.budgets[0].running == 1
    # once none is queued the message is as before
    calm = decide(s, p, {ids[0]: TrialState("Running", 1)})
    assert calm.message == f"0/{len(ids)} trials finished"
    # a queued trial of a removed budget never ran: cancelled, as a Starting one is
    later = spec(budgets=[1e11, 3e11], parallelism=3)
    d = decide(later, plan(later), states)
    assert {c.trial_id for c in d.cancels} == {ids[1], ids[2]}


def test_not_enough_results_is_a_clear_failure() -> None:
    s = spec(retries={"perTrial": 0, "maxFailedTrials": 100})
    p = plan(s)
    states = {t.id: TrialState("Failed", 1, error="x") for t in p.trials}
    d = decide(s, p, states)
    assert d.phase == "Failed"
    assert d.reason == "NotEnoughResults"


def test_status_document_is_compact_and_counts_trials() -> None:
    s = spec(training={"globalBatchSize": 16, "minSteps": 20})  # 3e10-d04 is infeasible
    p = plan(s)
    states = {
        p.trials[0].id: TrialState("Succeeded", 1, 1.5, source="simulated"),
        p.trials[1].id: TrialState("Running", 1),
    }
    d = decide(s, p, states)
    st_ = sweep_status(s, p, states, d, None, generation=3, now="2026-01-01T00:00:00Z")
    assert st_.progress == f"1/{len(p.trials)}"
    assert st_.observed_generation == 3
    assert st_.counts.running == 1
    assert {c.type: c.status for c in st_.conditions} == {
        "Ready": "False",
        "Failed": "False",
        "Fitted": "False",
    }
    phases = {r.id: r.phase for r in st_.trials}
    assert phases[p.trials[0].id] == "Succeeded"
    assert phases[p.infeasible[0].id] == "Infeasible"
    later = sweep_status(s, p, states, d, None, now="2026-01-02T00:00:00Z", previous=st_.conditions)
    assert later.conditions[0].last_transition_time == "2026-01-01T00:00:00Z"


def test_unidentified_intervals_and_disagreeing_methods_are_conditions() -> None:
    s = spec()
    p = plan(s)
    d = decide(s, p, {})
    law = api.PowerLaw(coefficient=1e-3, exponent=0.57, points=3)
    fit = api.FitResult(
        laws=api.Laws(params=law),
        not_identified=["params law intervals", "parametric E"],
        methods_agree=False,
        warnings=["the methods disagree: the parabolas give N* ~ C^0.57 ..."],
    )
    st_ = sweep_status(s, p, {}, d, fit, now="2026-01-01T00:00:00Z")
    by_type = {c.type: c for c in st_.conditions}
    assert by_type["Identified"].status == "False"
    assert by_type["Identified"].reason == "NotIdentified"
    assert "params law intervals, parametric E" in by_type["Identified"].message
    assert by_type["MethodsAgree"].status == "False"
    assert by_type["MethodsAgree"].message.startswith("the methods disagree")
    fine = api.FitResult(laws=api.Laws(params=law), methods_agree=True)
    st_ = sweep_status(s, p, {}, d, fine, now="2026-01-01T00:00:00Z")
    by_type = {c.type: c for c in st_.conditions}
    assert by_type["Identified"].status == "True"
    assert by_type["MethodsAgree"].status == "True"


def drive(
    s: api.ScalingSweepSpec, p: Plan, fail: frozenset[str] = frozenset()
) -> tuple[dict[str, TrialState], engine.Decision]:
    """Every launch finishes at once (the ids in `fail` fail), until the sweep ends."""
    states: dict[str, TrialState] = {}
    fitted: tuple[float, ...] = ()
    for _ in range(1000):
        d = decide(s, p, states, fitted)
        if d.fit_due:
            fitted = d.complete_budgets
        if d.phase in ("Succeeded", "Failed"):
            return states, d
        for launch in d.launches:
            start = TrialState(phase="Running", attempts=launch.attempt)
            loss = 1.0 + abs(launch.trial.params - 3e5) / 1e6
            states[launch.trial.id] = (
                start.fail("boom")
                if launch.trial.id in fail
                else start.finish(loss, {}, "simulated")
            )
    raise AssertionError("the sweep never ended")


def test_a_stable_run_that_fails_for_good_fails_the_branches_that_wait_for_it() -> None:
    s = spec(strategy=WSD, retries={"perTrial": 0, "maxFailedTrials": 2})
    p = plan(s)
    states, d = drive(s, p, fail=frozenset({"1e11-d02-stable"}))
    d02 = sorted(t.id for t in p.trials if t.rung == "d02")
    assert d02 == ["1e11-d02", "3e10-d02", "3e11-d02"]
    assert states["3e10-d02"].phase == "Succeeded"  # it branched before the failure
    for tid in ("1e11-d02", "3e11-d02"):  # never launched: their checkpoint never came
        assert "3e11-d02-stable" not in states
        assert tid not in states
    status = sweep_status(s, p, states, d, None)
    records = {r.id: r for r in status.trials}
    for tid in ("1e11-d02", "3e11-d02", "3e11-d02-stable"):
        assert records[tid].phase == "Failed"
        assert records[tid].error == "its stable run 1e11-d02-stable failed for good"
    assert d.gave_up == ("1e11-d02-stable", "3e11-d02-stable", "1e11-d02", "3e11-d02")
    # 2 grid trials failed, within maxFailedTrials 2: the segments are no points of the fit
    assert d.counts["failed"] == 2
    assert d.phase == "Succeeded"  # 3 rungs left per budget: still a law
    failing = spec(strategy=WSD, retries={"perTrial": 0, "maxFailedTrials": 1})
    _, gave_up = drive(failing, plan(failing), fail=frozenset({"1e11-d02-stable"}))
    assert gave_up.reason == "TooManyFailedTrials"
    assert gave_up.message.startswith("2 trials failed for good, more than retries.maxFailedTrials")


def test_the_status_says_what_was_branched_and_what_the_strategy_saved() -> None:
    s = spec(strategy=WSD)
    p = plan(s)
    states, d = drive(s, p)
    status = sweep_status(s, p, states, d, None)
    records = {r.id: r for r in status.trials}
    for t in p.trials:
        r = records[t.id]
        assert (r.kind, r.phase) == ("branch", "Succeeded")
        parent = records[r.branched_from or ""]
        assert parent.kind == "stable"
        assert r.branch_step == round(parent.tokens / t.tokens_per_sample / t.batch_size)
    assert sum(b.trials for b in status.budgets) == len(p.trials)  # segments are no budget's
    st_ = status.strategy
    assert st_ is not None
    assert st_.full_grid_flops == sum(t.flops for t in p.trials)
    spent = sum(n.own_flops for n in engine.resolve(s, p, states).graph.nodes)
    assert st_.spent_flops == st_.planned_flops == spent
    assert st_.compute_fraction == round(spent / st_.full_grid_flops, 4) < 0.8
    assert (
        sweep_status(spec(), plan(spec()), {}, decide(spec(), plan(spec()), {}), None).strategy
        is None
    )


def test_the_adaptive_ladder_skips_rungs_far_from_the_predicted_optimum() -> None:
    s = spec(
        model={"depths": [1, 2, 3, 4, 5, 6], "widthPerDepth": 32, "headDim": 32, "patchSize": 4},
        strategy=ADAPTIVE,
    )
    p = plan(s)
    states, d = drive(s, p)
    status = sweep_status(s, p, states, d, None)
    skipped = [r.id for r in status.trials if r.phase == "Skipped"]
    assert skipped == list(d.skipped)
    assert skipped
    assert all(tid.startswith("3e11-") for tid in skipped)
    assert d.counts["skipped"] == len(skipped) == status.strategy.skipped  # type: ignore[union-attr]
    assert d.counts["total"] == len(p.trials) - len(skipped)
    assert status.strategy is not None
    assert status.strategy.compute_fraction < 1
