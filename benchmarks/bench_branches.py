"""WSD branches against trials trained from scratch, on real training at CPU scale.

The quickstart sweep three ways, every trial really trained (procedural data, 2 cores, ~15 min):

- `cosine`: each trial from scratch with a cosine schedule (the reference);
- `constant`: each trial from scratch at a constant rate (what the spec's default trains);
- `wsd-branches`: one stable run per rung at a constant rate, keeping a checkpoint at each budget's
  branch point, then a cooldown branch per budget (the last `cooldown` of its steps, linear decay)
  started from that checkpoint. Its compute is the stable runs plus the branches' own steps.

Every way shares each rung's warmup (that of the rung's smallest-budget trial), so the three differ
only in their schedules. JSON lines: per trial the three losses; per way the compute (exact FLOPs,
from the trainers' own counts), and the fitted N*, D*, L* exponents with 95% intervals; a plot of
the three isoFLOP families in `benchmarks/results/branches-<date>.png`.

    python -m benchmarks.bench_branches                  # examples/quickstart.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from isoflop import api
from isoflop.fit import Points, analyze
from isoflop.sweep.plan import Trial, plan
from isoflop.sweep.strategy import Branch, Wsd, branch_plan, wsd_flops
from isoflop.sweep.trials import train_config
from isoflop_trainer.config import TrainConfig
from isoflop_trainer.train import train

WAYS = ("cosine", "constant", "wsd-branches")


def run(cfg: TrainConfig) -> dict[str, Any]:
    result, code = train(cfg)
    if code != 0:
        raise RuntimeError(f"{cfg.trial} failed: {result.get('error')}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", default="examples/quickstart.yaml")
    ap.add_argument("--cooldown", type=float, default=0.2)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", help="default: benchmarks/results/branches-<date>.jsonl")
    args = ap.parse_args()
    sweep = api.load_sweep(args.file)
    spec = sweep.spec
    torch.set_num_threads(os.cpu_count() or 1)
    p = plan(spec)
    stable_runs, branches = branch_plan(p.trials, Wsd(args.cooldown), spec.training.warmup_fraction)
    rungs: dict[str, list[Branch]] = {}
    for b in branches:
        rungs.setdefault(b.trial.rung, []).append(b)
    date = datetime.date.today().isoformat()
    out = Path(args.out or f"benchmarks/results/branches-{date}.jsonl")
    losses: dict[str, dict[str, float]] = {way: {} for way in WAYS}
    flops: dict[str, float] = dict.fromkeys(WAYS, 0.0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, mine in rungs.items():
            stable_run = stable_runs[name]

            def config(
                t: Trial, way: str, warmup: int = stable_run.warmup_steps, **kw: Any
            ) -> TrainConfig:
                base = train_config(spec, sweep.name, t, termination_log=None)
                return dataclasses.replace(base, warmup_steps=warmup, trial=f"{t.id}-{way}", **kw)

            for b in mine:
                for way, schedule in (("cosine", "cosine"), ("constant", "constant")):
                    r = run(config(b.trial, way, schedule=schedule))
                    losses[way][b.trial.id] = r["eval_loss"]
                    flops[way] += r["flops"]
            # the stable run: constant after the warmup, to the last branch point
            stable = root / name
            parent = run(
                config(
                    max((b.trial for b in mine), key=lambda t: t.steps),
                    "stable",
                    steps=stable_run.steps,
                    schedule="constant",
                    checkpoint=str(stable),
                    branch_points=stable_run.branch_points,
                    eval_samples=0,
                )
            )
            flops["wsd-branches"] += parent["flops"]
            for b in mine:
                t = b.trial
                r = run(
                    config(
                        t,
                        "branch",
                        schedule="wsd",
                        decay_fraction=args.cooldown,
                        checkpoint=str(root / f"{t.id}-branch"),
                        branch_from=str(stable),
                        branch_step=b.branch_step,
                    )
                )
                losses["wsd-branches"][t.id] = r["eval_loss"]
                flops["wsd-branches"] += r["own_flops"]
            print(
                f"{name}: {len(mine)} trials three ways, "
                f"{time.perf_counter() - started:.0f} s so far",
                file=sys.stderr,
                flush=True,
            )

    rows: list[dict[str, Any]] = []
    for t in p.trials:
        ref = losses["cosine"][t.id]
        rows.append(
            {
                "bench": "branches",
                "trial": t.id,
                "params": t.params,
                "tokens": t.tokens,
                **{way: losses[way][t.id] for way in WAYS},
                "branch_vs_cosine": losses["wsd-branches"][t.id] / ref - 1,
                "constant_vs_cosine": losses["constant"][t.id] / ref - 1,
            }
        )
    analyses = {}
    for way in WAYS:
        points_of = Points.from_rows(
            {"budget": t.budget, "params": float(t.params), "tokens": float(t.tokens),
             "loss": losses[way][t.id]}
            for t in p.trials
        )  # fmt: skip
        a = analyze(points_of, method="parabola", bootstrap=args.bootstrap, window=spec.fit.window)
        analyses[way] = (points_of, a)
        exps = {}
        for law in ("params", "tokens", "loss"):
            fitted = a.laws[law]
            ci = fitted.exponent_ci
            exps[law] = {
                "exponent": round(fitted.exponent, 4),
                "interval": None if ci is None else [round(ci.low, 4), round(ci.high, 4)],
            }
        rows.append(
            {
                "bench": "branches-fit",
                "way": way,
                "flops": flops[way],
                "flops_vs_cosine": round(flops[way] / flops["cosine"], 4),
                "planned_wsd_fraction": round(
                    wsd_flops(p.trials, Wsd(args.cooldown)) / sum(t.flops_exact for t in p.trials),
                    4,
                )
                if way == "wsd-branches"
                else None,
                "exponents": exps,
                "bracketed": sum(b.bracketed for b in a.budget_fits),
            }
        )
    diffs = [r["branch_vs_cosine"] for r in rows if r["bench"] == "branches"]
    const = [r["constant_vs_cosine"] for r in rows if r["bench"] == "branches"]
    rows.append(
        {
            "bench": "branches-summary",
            "sweep": sweep.name,
            "trials": len(p.trials),
            "cooldown": args.cooldown,
            "branch_vs_cosine_mean": round(statistics.fmean(diffs), 5),
            "branch_vs_cosine_range": [round(min(diffs), 5), round(max(diffs), 5)],
            "constant_vs_cosine_mean": round(statistics.fmean(const), 5),
            "constant_vs_cosine_range": [round(min(const), 5), round(max(const), 5)],
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    for row in rows:
        if row["bench"] != "branches":
            print(json.dumps(row))
    plot(analyses, out.with_suffix(".png"))


def plot(analyses: dict[str, tuple[Points, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"cosine": "o-", "constant": "s:", "wsd-branches": "^--"}
    colours = plt.get_cmap("viridis")
    budgets = sorted({float(b) for b in analyses["cosine"][0].budget})
    for way, (points, _) in analyses.items():
        for i, b in enumerate(budgets):
            mine = np.asarray(points.budget) == b
            order = np.argsort(np.asarray(points.params)[mine])
            ax.plot(
                np.asarray(points.params)[mine][order],
                np.asarray(points.loss)[mine][order],
                styles[way],
                color=colours(i / max(len(budgets) - 1, 1)),
                markersize=4,
                label=f"{way}" if i == len(budgets) - 1 else None,
            )
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation loss")
    ax.set_title("isoFLOP curves: cosine, constant, WSD branches (colour: budget)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
