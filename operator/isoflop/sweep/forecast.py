"""Forecast a sweep before running it: simulate it many times from a known law and fit each.

A user sees, for the grid they planned, how far each fitted exponent lands from the truth (bias),
how much it scatters, whether its reported interval holds the truth as often as it claims
(coverage), a verdict on what the grid can measure, and which change to the grid (a larger
budget, a rung on either end of the ladder) would narrow the N* exponent most and at what cost
in compute. The same simulations calibrate the fitting methods in `benchmarks/bench_calibration.py`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import minimize_scalar

from isoflop import api
from isoflop.fit import Analysis, Points, analyze
from isoflop.fit.analysis import Method
from isoflop.fit.parabola import DEFAULT_WINDOW, flops_per_param_token
from isoflop.sweep.plan import Plan, Trial, plan
from isoflop.sweep.strategy import (
    STRATEGIES,
    Adaptive,
    Strategy,
    Wsd,
    densified,
    run_adaptive,
    trial_points,
    wsd_flops,
)

LAWS = ("params", "tokens", "loss")
Progress = Callable[[int], None]  # told of each simulated sweep fitted (a progress bar)
METHODS = ("parabola", "parametric")


@dataclass(frozen=True)
class RateBasin:
    """How a simulated loss depends on the learning rate: L(N, D, eta) = L(N, D) x (1 + depth x
    log10(eta / eta*)^2), a convex basin in log eta around eta*(N, D) = coefficient x N^alpha x
    D^beta (Step Law's form and shape, Li et al. 2025). At depth 0.2 a rate 2x off its optimum
    loses 1.8%, 3x off 4.6%, 10x off 20% (the quickstart measured 6-32% at 3x off its optimum,
    2026-12-03: DiTs are more sensitive than the LLMs Step Law was fitted on)."""

    coefficient: float = 1.79
    alpha: float = -0.713
    beta: float = 0.307
    depth: float = 0.2

    @classmethod
    def parse(cls, text: str) -> RateBasin:
        """'coefficient,alpha,beta,depth' ('step' for Step Law's constants at depth 0.2)."""
        if text == "step":
            return cls()
        try:
            c, alpha, beta, depth = (float(v) for v in text.split(","))
        except ValueError:
            raise ValueError(
                f"--rates takes 'step' or four numbers coefficient,alpha,beta,depth; got {text!r}"
            ) from None
        if not (c > 0 and depth > 0 and math.isfinite(alpha) and math.isfinite(beta)):
            raise ValueError(f"--rates: the coefficient and depth must be positive; got {text!r}")
        return cls(c, alpha, beta, depth)

    def optimum(self, params: float, tokens: float) -> float:
        return float(self.coefficient * params**self.alpha * tokens**self.beta)

    def factor(self, params: float, tokens: float, rate: float) -> float:
        off = math.log10(rate / self.optimum(params, tokens))
        return 1.0 + self.depth * off * off


@dataclass(frozen=True)
class BatchBasin:
    """How a simulated loss depends on the global batch: L x (1 + depth x log10(B / B*)^2)
    around B*(D) = coefficient x D^beta (Step Law's batch law, D in tokens). At depth 0.1 a
    batch 2x off its optimum loses 0.9%, 4x off 3.6%: a broader basin than the rate's, as Step
    Law found."""

    coefficient: float = 0.58
    beta: float = 0.571
    depth: float = 0.1

    @classmethod
    def parse(cls, text: str) -> BatchBasin:
        """'coefficient,beta,depth' ('step' for Step Law's constants at depth 0.1)."""
        if text == "step":
            return cls()
        try:
            c, beta, depth = (float(v) for v in text.split(","))
        except ValueError:
            raise ValueError(
                f"--batches takes 'step' or three numbers coefficient,beta,depth; got {text!r}"
            ) from None
        if not (c > 0 and depth > 0 and math.isfinite(beta)):
            raise ValueError(f"--batches: the coefficient and depth must be positive; got {text!r}")
        return cls(c, beta, depth)

    def optimum(self, tokens: float) -> float:
        return float(self.coefficient * tokens**self.beta)

    def factor(self, tokens: float, batch: float) -> float:
        off = math.log10(batch / self.optimum(tokens))
        return 1.0 + self.depth * off * off


@dataclass(frozen=True)
class Law:
    """L(N, D) = E + (A / N^alpha + B / D^beta)^gamma, the surface a simulated sweep samples.

    gamma = 1 is Chinchilla's form; other values give surfaces outside the parametric fit's own
    model, so no method is judged only on data drawn from its own assumptions. The defaults
    reproduce the paper's in-context laws on its budgets under C = 6ND: N* = 0.0009 C^0.5681
    exactly, D* = 185.2 C^0.4319, and L* = 2.389 C^-0.02724 against the paper's 2.3943 C^-0.0273.
    """

    E: float = 0.58984
    A: float = 2.8032
    B: float = 34.222
    alpha: float = 0.2
    beta: float = 0.26307
    gamma: float = 1.0
    # the loss's dependence on the learning rate; None: every rate is the optimum
    rates: RateBasin | None = None
    batches: BatchBasin | None = None  # on the global batch; None: every batch is the optimum

    def __call__(self, params: float | np.ndarray, tokens: float | np.ndarray) -> np.ndarray:
        core = self.A / np.power(params, self.alpha) + self.B / np.power(tokens, self.beta)
        return np.asarray(self.E + core**self.gamma, dtype=np.float64)

    @property
    def params_exponent(self) -> float:
        """N* ~ C^a under C = k N D with k fixed (gamma does not move the optimum)."""
        return self.beta / (self.alpha + self.beta)

    @classmethod
    def parse(cls, text: str) -> Law:
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) not in (5, 6) or any(not math.isfinite(v) or v <= 0 for v in values):
            raise ValueError(
                f"--law takes five or six positive numbers E,A,B,alpha,beta[,gamma]; got {text!r}"
            )
        e, a, b, alpha, beta = values[:5]
        return cls(e, a, b, alpha, beta, values[5] if len(values) == 6 else 1.0)

    def text(self) -> str:
        core = f"E={self.E:.4g} A={self.A:.4g} B={self.B:.4g} alpha={self.alpha:.4g} "
        return (
            core + f"beta={self.beta:.4g}" + (f" gamma={self.gamma:g}" if self.gamma != 1 else "")
        )


def law_from_results(points: Points) -> tuple[Law, float | None]:
    """The surface and noise a pilot sweep's results imply: its parametric fit, its noise model.

    A forecast from these simulates the sweep you planned on the loss surface your own trainer
    and data produced, at the noise your own trials showed.
    """
    from isoflop.fit import fit_parametric
    from isoflop.fit.noise import estimate_noise

    f = fit_parametric(points)
    degenerate = sorted({"alpha", "beta", "A", "B"} & set(f.at_bound))  # E at 0 is a surface
    if degenerate:
        raise ValueError(
            f"the results do not pin down a loss surface: {', '.join(degenerate)} ended on an "
            "optimizer bound; add model sizes or budgets to the pilot"
        )
    return Law(f.E, f.A, f.B, f.alpha, f.beta), estimate_noise(points).relative


def simulated_loss(
    law: Law,
    trial_id: str,
    params: float,
    tokens: float,
    noise: float,
    seed: int,
    rate: float | None = None,
    batch: int | None = None,
) -> float:
    """One trial's loss: the law (at this learning rate and batch, where the law has basins for
    them) times lognormal noise, seeded by the trial's id."""
    key = int(hashlib.sha256(f"{seed}/{trial_id}".encode()).hexdigest()[:12], 16)
    loss = float(law(params, tokens))
    if law.rates is not None and rate is not None:
        loss *= law.rates.factor(params, tokens, rate)
    if law.batches is not None and batch is not None:
        loss *= law.batches.factor(tokens, batch)
    return loss * math.exp(noise * np.random.default_rng(key).normal())


@dataclass(frozen=True)
class Truth:
    """The laws a perfect fit of this grid would find: each budget's true optimum, lines through."""

    exponents: dict[str, float]  # params, tokens, loss
    coefficients: dict[str, float]


def truth(p: Plan, law: Law) -> Truth:
    """Each budget's true optimum of the law along its isoFLOP line, and power laws through them.

    The FLOPs per parameter-token k(N) of each budget come from its planned trials, as the fit's
    own D* does, so exact accounting is judged against its own truth.
    """
    budgets, opt = true_optima(p, law)
    log_c = np.log10(budgets)
    exps, coefs = {}, {}
    for name in LAWS:
        slope, intercept = np.polyfit(log_c, np.log10(opt[name]), 1)
        exps[name], coefs[name] = float(slope), float(10**intercept)
    return Truth(exps, coefs)


def ladder_sentence(p: Plan, law: Law) -> str:
    """Where the law's optima lie against the ladder, for a grid that gives no law: 'every
    budget's optimum lies below the ladder (N* 1.2k-3.4k against rungs of 80k-690k)'."""
    budgets, opt = true_optima(p, law)
    sizes = [t.params for t in p.trials]
    lo, hi = min(sizes), max(sizes)
    n = opt["params"]
    below, above = sum(x < lo for x in n), sum(x > hi for x in n)
    where = (
        "below" if below == len(n) else "above" if above == len(n) else "outside" if below + above
        else "inside"
    )  # fmt: skip
    span = f"N* {n[0]:.3g}-{n[-1]:.3g} at {budgets[0]:.3g}-{budgets[-1]:.3g} FLOPs"
    return f"{span}, against rungs of {lo:.3g}-{hi:.3g} parameters ({where} the ladder)"


def true_optima(p: Plan, law: Law) -> tuple[list[float], dict[str, list[float]]]:
    """The budgets of the plan and the law's true (N*, D*, L*) along each one's isoFLOP line."""
    budgets = sorted({t.budget for t in p.trials})
    opt = {name: [] for name in LAWS}  # type: dict[str, list[float]]
    for c in budgets:
        trials = [t for t in p.trials if t.budget == c]
        params = np.array([float(t.params) for t in trials])
        tokens = np.array([float(t.tokens) for t in trials])

        def loss_at(
            x: float, c: float = c, params: np.ndarray = params, tokens: np.ndarray = tokens
        ) -> float:
            k = float(flops_per_param_token(c, params, tokens, x))
            n = 10**x
            return float(law(n, c / (k * n)))

        lo, hi = np.log10(params.min()) - 3, np.log10(params.max()) + 3
        res = minimize_scalar(loss_at, bounds=(lo, hi), method="bounded", options={"xatol": 1e-9})
        n_opt = 10 ** float(res.x)
        k = float(flops_per_param_token(c, params, tokens, float(res.x)))
        opt["params"].append(n_opt)
        opt["tokens"].append(c / (k * n_opt))
        opt["loss"].append(float(res.fun))
    return budgets, opt


@dataclass(frozen=True)
class Estimates:
    """One method's fitted exponents over the simulated sweeps: (runs,) arrays, NaN if missing."""

    value: dict[str, np.ndarray]
    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]
    failed: int


def simulate(
    spec: api.ScalingSweepSpec,
    law: Law,
    noise: float,
    runs: int,
    bootstrap: int,
    methods: Iterable[Method] = ("parabola",),
    window: float | None = DEFAULT_WINDOW,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Estimates]:
    """Draw `runs` sweeps of this spec from the law with lognormal noise; fit each by each method.

    The fits estimate the noise from the simulated losses themselves, as they would from real
    trials. Per method, the three exponents and their intervals (NaN where not identified).
    """
    methods = tuple(methods)
    p = plan(spec)
    if not p.trials:
        raise ValueError("the plan has no feasible trial to simulate")
    base = Points.from_rows(
        {"budget": t.budget, "params": float(t.params), "tokens": float(t.tokens), "loss": 1.0}
        for t in p.trials
    )
    clean = law(base.params, base.tokens)
    out = {m: {k: np.full((3, runs), np.nan) for k in LAWS} for m in methods}
    failed = dict.fromkeys(methods, 0)
    rng = np.random.default_rng(seed)
    for r in range(runs):
        points = base.with_loss(clean * np.exp(noise * rng.standard_normal(len(clean))))
        for m in methods:
            try:
                a = analyze(points, method=m, bootstrap=bootstrap, seed=seed + r, window=window)
            except ValueError:
                failed[m] += 1
                continue
            for name in LAWS:
                value, ci = _exponent(a, m, name)
                out[m][name][0, r] = value
                if ci is not None:
                    out[m][name][1:, r] = ci
        if progress is not None:
            progress(1)
    return {
        m: Estimates(
            {k: v[0] for k, v in out[m].items()},
            {k: v[1] for k, v in out[m].items()},
            {k: v[2] for k, v in out[m].items()},
            failed[m],
        )
        for m in methods
    }


@dataclass(frozen=True)
class StrategyRuns:
    """A strategy's simulated sweeps: the parabola fit's exponents and the compute each spent."""

    estimates: Estimates
    compute: np.ndarray  # (runs,) FLOPs as the strategy accounts them
    trials: np.ndarray  # (runs,) trials trained (branches count one each)


def simulate_strategy(
    spec: api.ScalingSweepSpec,
    law: Law,
    noise: float,
    runs: int,
    bootstrap: int,
    adaptive: Adaptive | None = None,
    wsd: Wsd | None = None,
    window: float | None = DEFAULT_WINDOW,
    seed: int = 0,
    progress: Progress | None = None,
) -> StrategyRuns:
    """Like `simulate` for one strategy (neither: the full grid). A WSD branch's loss is drawn
    from the law like a trial trained from scratch to the same (N, D): what the branches are
    meant to give (the real comparison is in the closing evidence of the strategies' issue)."""
    p = plan(spec)
    if not p.trials:
        raise ValueError("the plan has no feasible trial to simulate")
    out = {k: np.full((3, runs), np.nan) for k in LAWS}
    compute, count = np.zeros(runs), np.zeros(runs)
    failed = 0
    rng = np.random.default_rng(seed)

    def train(chosen: Sequence[Trial]) -> dict[str, float]:
        clean = law(
            np.array([float(t.params) for t in chosen]), np.array([float(t.tokens) for t in chosen])
        )
        drawn = clean * np.exp(noise * rng.standard_normal(len(chosen)))
        return {t.id: float(v) for t, v in zip(chosen, drawn, strict=True)}

    def one(r: int) -> bool:
        """Simulate and fit sweep r; False when it gives no law."""
        try:
            losses = run_adaptive(p.trials, adaptive, train) if adaptive else train(p.trials)
        except ValueError:  # the seeds gave no law to predict from
            return False
        trained = [t for t in p.trials if t.id in losses]
        compute[r] = wsd_flops(trained, wsd) if wsd else sum(t.flops_exact for t in trained)
        count[r] = len(trained)
        points = trial_points(trained, losses)
        try:
            a = analyze(
                points, method="parabola", bootstrap=bootstrap, seed=seed + r, window=window
            )
        except ValueError:
            return False
        for name in LAWS:
            value, ci = _exponent(a, "parabola", name)
            out[name][0, r] = value
            if ci is not None:
                out[name][1:, r] = ci
        return True

    for r in range(runs):
        failed += not one(r)
        if progress is not None:
            progress(1)
    est = Estimates(
        {k: v[0] for k, v in out.items()},
        {k: v[1] for k, v in out.items()},
        {k: v[2] for k, v in out.items()},
        failed,
    )
    return StrategyRuns(est, compute, count)


@dataclass(frozen=True)
class StrategyForecast:
    """One strategy's simulated sweeps, against the full grid's on the same law and noise."""

    strategy: Strategy
    budgets: int
    trials: float  # mean trials trained per sweep
    compute: float  # mean FLOPs per sweep, as the strategy accounts them, / the full grid's
    exponent: ExponentForecast | None  # the N* exponent; None when no sweep could be fitted
    equal_precision: float | None  # compute for the full grid's N* scatter, / the full grid's


def compare_strategies(
    spec: api.ScalingSweepSpec,
    law: Law,
    noise: float,
    runs: int,
    bootstrap: int,
    strategies: Sequence[Strategy] = STRATEGIES,
    window: float | None = DEFAULT_WINDOW,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[StrategyForecast]:
    """Each strategy simulated `runs` times on the same law and noise: the compute it spends,
    its N* exponent's bias, scatter, interval width and coverage, and the compute it would need,
    buying precision with replicates (scatter ~ 1/sqrt(r)), to match the full grid's scatter."""
    full_compute = float(sum(t.flops_exact for t in plan(spec).trials))
    out, reference = [], None
    for s in strategies:
        grid = densified(spec, s.budget_factor)
        runs_of = simulate_strategy(
            grid, law, noise, runs, bootstrap, s.adaptive, s.wsd, window, seed, progress
        )
        true = truth(plan(grid), law).exponents
        exp = next(
            (e for e in summarize(runs_of.estimates, true, "parabola") if e.law == "params"), None
        )
        ok = np.isfinite(runs_of.estimates.value["params"])
        compute = float(runs_of.compute[ok].mean()) / full_compute if ok.any() else math.nan
        cost = None if exp is None or not exp.spread > 0 else compute * exp.spread**2
        if reference is None and not s.adaptive and not s.wsd and s.budget_factor == 1:
            reference = cost
        out.append(
            StrategyForecast(
                s,
                len(grid.budgets),
                float(runs_of.trials[ok].mean()) if ok.any() else 0.0,
                compute,
                exp,
                cost,
            )
        )
    return [
        replace(
            f,
            equal_precision=None
            if f.equal_precision is None or not reference
            else f.equal_precision / reference,
        )
        for f in out
    ]


def format_strategies(rows: Sequence[StrategyForecast], runs: int, noise: float) -> str:
    lines = [
        f"Strategies, {runs} simulated sweeps each at {noise:.2%} noise (N* exponent; compute as a "
        "multiple of the full grid's):",
        f"  {'strategy':<30} {'budgets':>7} {'trials':>6} {'compute':>8} {'bias':>8} "
        f"{'scatter':>8} {'interval':>8} {'coverage':>8} {'same precision':>14}",
    ]
    for r in rows:
        e = r.exponent
        cells = (
            ("-",) * 4
            if e is None
            else (
                f"{e.bias:+.4f}",
                f"{e.spread:.4f}",
                f"{e.interval_width:.4f}" if math.isfinite(e.interval_width) else "n/a",
                f"{e.coverage:.0%}" if e.coverage is not None else "n/a",
            )
        )
        same = f"{r.equal_precision:.2f}x" if r.equal_precision is not None else "-"
        lines.append(
            f"  {r.strategy.name:<30} {r.budgets:>7} {r.trials:>6.1f} {r.compute:>7.2f}x "
            + " ".join(f"{c:>8}" for c in cells)
            + f" {same:>14}"
        )
    lines.append(
        "  'same precision': the compute to match the full grid's scatter, buying precision with "
        "replicates; WSD branch losses are drawn as if trained from scratch."
    )
    return "\n".join(lines)


def _exponent(a: Analysis, method: str, name: str) -> tuple[float, tuple[float, float] | None]:
    if method == "parabola":
        law = a.laws[name]
        ci = law.exponent_ci
        return law.exponent, None if ci is None else (ci.low, ci.high)
    f = a.parametric
    if name == "loss" or f is None:
        return math.nan, None
    value = f.params_exponent if name == "params" else f.tokens_exponent
    ci = f.intervals.get(f"{name}_exponent")
    return value, None if ci is None else (ci.low, ci.high)


@dataclass(frozen=True)
class ExponentForecast:
    law: str  # params, tokens, loss
    method: str
    true: float
    mean: float
    bias: float
    spread: float  # standard deviation of the estimate across simulated sweeps
    interval_width: float  # mean width of the reported interval (NaN: never identified)
    coverage: float | None  # share of identified intervals that held the true exponent
    identified: float  # share of sweeps whose interval was identified

    @property
    def calibrated(self) -> bool:
        """Unbiased against its own scatter, and its intervals cover the truth 90% of the time
        or more (above 98% they are wider than they need to be, which is safe)."""
        return (
            self.coverage is not None
            and self.coverage >= 0.90
            and abs(self.bias) <= max(0.005, 0.5 * self.spread)
            and self.identified >= 0.9
        )


def summarize(est: Estimates, true: dict[str, float], method: str) -> list[ExponentForecast]:
    out = []
    for name in LAWS:
        v = est.value[name]
        ok = np.isfinite(v)
        if not ok.any():
            continue
        lo, hi = est.low[name], est.high[name]
        has = ok & np.isfinite(lo) & np.isfinite(hi)
        coverage = (
            float(np.mean((lo[has] <= true[name]) & (true[name] <= hi[has]))) if has.any() else None
        )
        mean = float(v[ok].mean())
        out.append(
            ExponentForecast(
                law=name,
                method=method,
                true=true[name],
                mean=mean,
                bias=mean - true[name],
                spread=float(v[ok].std(ddof=1)) if ok.sum() > 1 else 0.0,
                interval_width=float((hi[has] - lo[has]).mean()) if has.any() else math.nan,
                coverage=coverage,
                identified=float(has.sum() / ok.sum()),
            )
        )
    return out


@dataclass(frozen=True)
class Variant:
    label: str
    width: float  # the N* exponent's mean interval width relative to the planned grid's
    compute: float  # the variant's total training FLOPs relative to the planned grid's


@dataclass(frozen=True)
class Forecast:
    runs: int
    noise: float
    law: Law
    failed_runs: int
    exponents: tuple[ExponentForecast, ...]
    variants: tuple[Variant, ...] = ()
    compute: float = 0.0  # total training FLOPs of the planned grid
    target: float | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def verdict(self) -> str:
        """Can this grid measure the N* exponent, and to what precision."""
        e = next((x for x in self.exponents if x.law == "params"), None)
        if e is None:
            return "this grid cannot measure the N* exponent: no simulated sweep could be fitted"
        half = e.interval_width / 2
        if e.identified < 0.9:
            return (
                f"this grid cannot measure the N* exponent: its interval is not identified in "
                f"{1 - e.identified:.0%} of simulated sweeps (budgets whose minimum leaves the "
                "ladder); widen the ladder around the optima or add model sizes"
            )
        if not e.calibrated:
            cov = "-" if e.coverage is None else f"{e.coverage:.0%}"
            return (
                f"this grid cannot measure the N* exponent reliably with the {e.method} method: "
                f"bias {e.bias:+.4f} against a scatter of {e.spread:.4f}, and its 95% intervals "
                f"hold the truth {cov} of the time"
            )
        if self.target is not None and half > self.target:
            return (
                f"this grid cannot measure the N* exponent to +-{self.target:g}: it gets to "
                f"+-{half:.3f} (95%); see the changes below"
            )
        verdict = f"this grid can measure the N* exponent to +-{half:.3f} (95%, bias {e.bias:+.4f})"
        if e.coverage is not None and e.coverage > 0.98:
            verdict += (
                f"; its intervals are conservative (they held the truth in {e.coverage:.0%} of "
                "simulated sweeps)"
            )
        return verdict


def variant_runs(runs: int) -> int:
    """Simulated sweeps for each change to the grid: half the forecast's own."""
    return max(runs // 2, 2)


def forecast_size(spec: api.ScalingSweepSpec, runs: int, variants: bool = True) -> int:
    """How many simulated sweeps `forecast` fits (for a progress bar): its own, and each
    change's when it tries the changes."""
    return runs + (len(grid_variants(spec)) * variant_runs(runs) if variants else 0)


def forecast(
    spec: api.ScalingSweepSpec,
    law: Law,
    noise: float = 0.005,
    runs: int = 40,
    bootstrap: int = 200,
    variants: bool = True,
    method: Method = "parabola",
    window: float | None = DEFAULT_WINDOW,
    target: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> Forecast:
    """Simulate `runs` sweeps of this spec on `law`; report bias, scatter, interval width and
    coverage of each exponent, and what each change to the grid would buy."""
    if runs < 2:
        raise ValueError(f"a forecast needs at least 2 simulated runs, got {runs}")
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"the noise must be a non-negative relative value, got {noise}")
    if method not in METHODS:
        raise ValueError(f"method must be parabola or parametric, got {method!r}")
    p = plan(spec)
    est = simulate(spec, law, noise, runs, bootstrap, (method,), window, seed, progress)[method]
    if est.failed == runs:
        raise ValueError(
            f"no simulated sweep could be fitted: under the law simulated ({law.text()}) no "
            f"budget has its loss minimum inside the ladder: {ladder_sentence(p, law)}. The "
            "default law is the paper's, for DiTs of millions of parameters and up: forecast "
            "on your own data's surface (--from a pilot's trials.csv) or give one (--law)"
        )
    exps = summarize(est, truth(p, law).exponents, method)
    compute = sum(t.flops for t in p.trials)
    changes: list[Variant] = []
    base = next((e.interval_width for e in exps if e.law == "params"), math.nan)
    if variants and math.isfinite(base) and base > 0:
        for label, changed in grid_variants(spec):
            try:
                alt = simulate(
                    changed, law, noise, variant_runs(runs), bootstrap, (method,), window, seed,
                    progress,
                )  # fmt: skip
            except ValueError:
                continue
            widths = alt[method].high["params"] - alt[method].low["params"]
            if np.isfinite(widths).any():
                cost = sum(t.flops for t in plan(changed).trials) / compute
                changes.append(Variant(label, float(np.nanmean(widths)) / base, cost))
    return Forecast(
        runs,
        noise,
        law,
        est.failed,
        tuple(exps),
        tuple(sorted(changes, key=lambda v: v.width)),
        compute,
        target,
    )


def grid_variants(spec: api.ScalingSweepSpec) -> list[tuple[str, api.ScalingSweepSpec]]:
    """Candidate changes: one more budget above the largest, one more rung at either end."""
    out = []
    top = max(spec.budgets)
    out.append(
        (f"add budget {3 * top:.3g}", spec.model_copy(update={"budgets": [*spec.budgets, 3 * top]}))
    )
    depths = spec.model.depths
    if depths:
        bigger = spec.model.model_copy(update={"depths": [*depths, max(depths) + 1]})
        out.append((f"add depth {max(depths) + 1}", spec.model_copy(update={"model": bigger})))
        if min(depths) > 1:
            smaller = spec.model.model_copy(update={"depths": [min(depths) - 1, *depths]})
            out.append((f"add depth {min(depths) - 1}", spec.model_copy(update={"model": smaller})))
    return out


def format_forecast(f: Forecast) -> str:
    lines = [
        f"Forecast over {f.runs} simulated sweeps at {f.noise:.2%} noise "
        f"({f.failed_runs} could not be fitted), law {f.law.text()}",
        "  law  method      true      mean      bias      spread    interval width  coverage",
    ]
    names = {"params": "N*", "tokens": "D*", "loss": "L*"}
    for e in f.exponents:
        cov = "-" if e.coverage is None else f"{e.coverage:.0%}"
        width = (
            "not identified" if not math.isfinite(e.interval_width) else f"{e.interval_width:.4f}"
        )
        lines.append(
            f"  {names[e.law]:<4} {e.method:<11} {e.true:<9.4f} {e.mean:<9.4f} {e.bias:<+9.4f} "
            f"{e.spread:<9.4f} {width:<15} {cov}"
        )
    lines.append(f"Verdict: {f.verdict()}.")
    if f.variants:
        lines.append(
            "What would narrow the N* exponent's interval most (width and compute relative to now):"
        )
        lines += [
            f"  {v.label}: width {v.width:.2f}x, compute {v.compute:.2f}x" for v in f.variants
        ]
    return "\n".join(lines)
