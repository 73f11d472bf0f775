"""What `isoflop run` shows: the rich live view on a terminal, one line per event in a pipe."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from isoflop import api
from isoflop.local.backends import Observation, SimulatedBackend
from isoflop.local.display import Display, fmt_time, live_view
from isoflop.local.runner import Run
from isoflop.sweep.forecast import Law

ROOT = Path(__file__).resolve().parents[2]


def small_run(tmp_path: Path) -> Run:
    sweep = api.load_sweep(ROOT / "examples" / "paper-in-context.yaml")
    fit = sweep.spec.fit.model_copy(update={"bootstrap": 0, "method": "parabola"})
    sweep = sweep.model_copy(update={"spec": sweep.spec.model_copy(update={"fit": fit})})
    return Run(sweep, tmp_path, SimulatedBackend(Law(), noise=0.005, seed=0))


def render(run: Run, decision: object) -> str:
    console = Console(file=io.StringIO(), width=120, record=True, color_system=None)
    console.print(live_view(run, decision))  # type: ignore[arg-type]
    return console.export_text()


def test_the_live_view_shows_phases_running_trials_with_progress_and_the_laws(
    tmp_path: Path,
) -> None:
    run = small_run(tmp_path)
    decision = run.step()
    while not run.state.fit:  # until the first two budgets are fitted
        decision = run.step()
    done = decision.counts["succeeded"]
    running = next(t.id for t in run.plan.trials if run.state.trials.get(t.id) is None)
    run.live = {running: Observation("Running", step=250, steps=1000, current_loss=0.6123)}
    text = render(run, decision)
    lines = text.splitlines()
    assert lines[0].startswith(f"paper-in-context: {decision.phase}   elapsed ")
    assert f"succeeded {done}  running {decision.counts['running']}" in lines[1]
    assert lines[1].endswith(f"of {decision.counts['total']}")
    row = next(line for line in lines if line.startswith(running))
    assert re.search(r"250/1000\s+loss 0\.6123$", row), row
    bar = row[len(running) :].split("250/1000")[0]
    assert 4 <= bar.count("━") <= 8  # a quarter of a 24-wide bar (rich may draw a half cell)
    law = run.state.fit.laws.params
    assert law is not None
    assert lines[-1].startswith(f"laws: N* ~ C^{law.exponent:.4f}")


def test_a_starting_trial_has_no_bar_and_a_finished_sweep_no_running_rows(tmp_path: Path) -> None:
    run = small_run(tmp_path)
    decision = run.step()
    run.live = {"x": Observation("Running")}  # launched, no progress reported yet
    assert "x starting" in " ".join(render(run, decision).split())
    run.live = {}
    assert len(render(run, decision).splitlines()) == 2  # head and phases only, no laws yet


def test_plain_output_is_one_line_per_event(tmp_path: Path) -> None:
    run = small_run(tmp_path)
    out = io.StringIO()
    decision = run.run(Display(stream=out, live=False))
    lines = out.getvalue().splitlines()
    events = [line for line in lines if ": Succeeded loss " in line]
    assert len(events) == decision.counts["succeeded"] == len(run.plan.trials)
    assert len({line.split("] ", 1)[1].split(":")[0] for line in events}) == len(events)
    fits = [line for line in lines if "fitted laws on budgets" in line]
    assert len(fits) == len({tuple(line.split("budgets ")[1].split(":")[0]) for line in fits})
    assert all(re.match(r"^\[\d+:\d\d\] ", line) for line in lines)
    assert "\x1b" not in out.getvalue()  # no terminal codes in a pipe


def test_the_live_view_draws_on_a_terminal_and_leaves_its_last_frame(tmp_path: Path) -> None:
    run = small_run(tmp_path)
    out = io.StringIO()
    decision = run.run(Display(stream=out, live=True))
    text = out.getvalue()
    assert "\x1b[" in text  # redrawn in place
    last = text.rsplit("paper-in-context", 1)[1]
    assert f"succeeded {decision.counts['succeeded']}" in last
    assert ": Succeeded loss" not in text  # no event lines in the live view


def test_times_read_as_minutes_and_hours() -> None:
    assert [fmt_time(s) for s in (None, 5, 65, 3725)] == ["-", "0:05", "1:05", "1:02:05"]


def test_forecast_and_fit_report_their_progress_unit_by_unit() -> None:
    """What the progress bars count: one tick per simulated sweep fitted (forecast_size in all),
    one per parametric resample."""
    from isoflop.fit import Points, analyze
    from isoflop.sweep.forecast import forecast, forecast_size
    from isoflop.sweep.plan import plan

    spec = api.load_sweep(ROOT / "examples" / "paper-in-context.yaml").spec
    ticks: list[int] = []
    result = forecast(spec, Law(), runs=2, bootstrap=100, progress=ticks.append)
    assert result.variants  # the grid's changes were simulated too
    assert sum(ticks) == forecast_size(spec, 2) == 2 + len(result.variants) * 2
    trials = plan(spec).trials
    law = Law()
    table = Points.from_rows(
        {"budget": t.budget, "params": float(t.params), "tokens": float(t.tokens),
         "loss": float(law(np.array([t.params]), np.array([t.tokens]))[0])}
        for t in trials
    )  # fmt: skip
    ticks.clear()
    analyze(table, method="parametric", bootstrap=100, noise=0.005, progress=ticks.append)
    assert ticks == [1] * 100


def test_progress_bars_stay_out_of_pipes(capsys: pytest.CaptureFixture[str]) -> None:
    from isoflop_trainer.progress import progress_bar

    with progress_bar("work", 10) as advance:
        advance(5)
        advance(5)
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", "")
