"""An Analysis as the status document (`api.FitResult`) and as readable text."""

from __future__ import annotations

import math

from isoflop import api
from isoflop.fit.analysis import Analysis, Comparison, HoldOut, Prediction
from isoflop.fit.noise import describe
from isoflop.fit.parabola import BudgetFit
from isoflop.fit.parametric import ParametricFit
from isoflop.fit.powerlaw import PowerLaw
from isoflop.fit.stats import Interval, Predicted
from isoflop.sweep.plan import format_flops


def _interval(i: Interval | None) -> api.Interval | None:
    return None if i is None else api.Interval(low=i.low, high=i.high)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _law(law: PowerLaw) -> api.PowerLaw:
    return api.PowerLaw(
        coefficient=law.coefficient,
        exponent=law.exponent,
        points=law.points,
        coefficient_interval=_interval(law.coefficient_ci),
        exponent_interval=_interval(law.exponent_ci),
    )


def _estimate(p: Predicted | None) -> api.Estimate | None:
    if p is None:
        return None
    return api.Estimate(value=p.value, confidence=_interval(p.ci), prediction=_interval(p.pi))


def _prediction(p: Prediction) -> api.Prediction:
    return api.Prediction(
        budget=p.budget,
        params=_estimate(p.params),
        tokens=_estimate(p.tokens),
        loss=_estimate(p.loss),
        metrics={k: e for k, v in p.metrics.items() if (e := _estimate(v)) is not None},
        parametric_params=p.parametric_params,
        parametric_loss=p.parametric_loss,
    )


def to_result(a: Analysis) -> api.FitResult:
    """The fit part of a ScalingSweep status."""
    noise = a.noise
    return api.FitResult(
        noise=api.NoiseEstimate(
            relative=noise.relative,
            dof=noise.dof if math.isfinite(noise.dof) else None,
            source=noise.source,
        ),
        not_identified=list(a.not_identified),
        methods_agree=a.methods_agree,
        budget_fits=[_budget_fit(f) for f in a.budget_fits],
        laws=_laws(a),
        parametric=None if a.parametric is None else _parametric(a.parametric),
        predictions=[_prediction(p) for p in a.predictions],
        hold_out=None if a.holdout is None else _hold_out(a.holdout),
        warnings=list(a.warnings),
    )


def _laws(a: Analysis) -> api.Laws:
    s = a.loss_saturating
    saturating = None
    if s is not None:
        saturating = api.SaturatingLaw(
            irreducible=s.irreducible,
            coefficient=s.coefficient,
            decay=s.decay,
            irreducible_interval=_interval(s.irreducible_ci),
            decay_interval=_interval(s.decay_ci),
        )
    return api.Laws(
        params=_law(a.laws["params"]) if a.laws else None,
        tokens=_law(a.laws["tokens"]) if a.laws else None,
        loss=_law(a.laws["loss"]) if a.laws else None,
        metrics={k: _law(v) for k, v in a.metric_laws.items()},
        metrics_vs_loss={k: _law(v) for k, v in a.metric_vs_loss.items()},
        loss_saturating=saturating,
    )


def _parametric(f: ParametricFit) -> api.ParametricLaw:
    return api.ParametricLaw(
        E=f.E,
        A=f.A,
        B=f.B,
        alpha=f.alpha,
        beta=f.beta,
        params_exponent=f.params_exponent,
        tokens_exponent=f.tokens_exponent,
        params_exponent_interval=_interval(f.intervals.get("params_exponent")),
        tokens_exponent_interval=_interval(f.intervals.get("tokens_exponent")),
        intervals={
            k: api.Interval(low=v.low, high=v.high)
            for k in ("E", "A", "B", "alpha", "beta")
            if (v := f.intervals.get(k)) is not None
        },
        at_bound=sorted(f.at_bound),
    )


def _hold_out(h: HoldOut) -> api.HoldOutCheck:
    return api.HoldOutCheck(
        budget=h.budget,
        params_error=h.params_error,
        loss_error=h.loss_error,
        within_prediction_interval=h.within_prediction_interval,
        params_within=h.params_within,
        loss_within=h.loss_within,
    )


def _budget_fit(f: BudgetFit) -> api.BudgetFit:
    return api.BudgetFit(
        budget=f.budget,
        points=f.points,
        a=f.a,
        b=f.b,
        c=f.c,
        params_opt=_finite(f.params_opt),
        tokens_opt=_finite(f.tokens_opt),
        loss_opt=_finite(f.loss_opt),
        bracketed=f.bracketed,
        advice=f.advice or None,
        params_opt_interval=_interval(f.params_opt_ci),
        loss_opt_interval=_interval(f.loss_opt_ci),
        bracketed_fraction=f.bracketed_fraction,
    )


# ------------------------------------------------------------------------------------------------
# text


def g(x: float | None, digits: int = 4) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.{digits}g}"


def ci(i: Interval | None, digits: int = 4) -> str:
    return "" if i is None else f"[{g(i.low, digits)}, {g(i.high, digits)}]"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    out = ["  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    out += [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return out


def format_text(a: Analysis) -> str:
    """The fit as a reader takes it in: the noise, each budget's parabola, the power laws, the
    parametric fit, predictions, the hold-out check and every warning."""
    lines: list[str] = [f"Noise of one trial's loss: {describe(a.noise)}"]
    for section in (_parabola_text, _parametric_text, _predictions_text, _hold_out_text):
        said = section(a)
        if said:
            lines += ["", *said]
    if a.warnings:
        lines.append("")
        lines += [f"warning: {w}" for w in a.warnings]
    return "\n".join(lines)


def _parabola_text(a: Analysis) -> list[str]:
    if not a.budget_fits:
        return []
    level = f"{a.confidence:.0%}"
    where = (
        "every rung alike"
        if a.window is None
        else f"around its minimum, to a {a.window:.0%} loss rise"
    )
    lines = [f"isoFLOP parabolas (loss against log10 N, one per budget, fitted {where})"]
    lines += _table(
        ["budget", "trials", "N*", f"{level} CI", "D*", "L*", f"{level} CI", "bracketed"],
        [
            [
                format_flops(f.budget),
                str(f.points),
                g(f.params_opt),
                ci(f.params_opt_ci) or NOT_IDENTIFIED,
                g(f.tokens_opt),
                g(f.loss_opt),
                ci(f.loss_opt_ci) or NOT_IDENTIFIED,
                _bracketed(f.bracketed, f.bracketed_fraction),
            ]
            for f in a.budget_fits
        ],
    )
    lines.append("")
    lines.append(f"Power laws ({level} parametric-bootstrap intervals, {a.bootstrap} resamples)")
    symbols = {"params": "N*(C)", "tokens": "D*(C)", "loss": "L*(C)"}
    named = [(symbols[k], "C", law) for k, law in a.laws.items()]
    named += [(f"{k}*(C)", "C", law) for k, law in a.metric_laws.items()]
    named += [(f"{k}(L)", "L", law) for k, law in a.metric_vs_loss.items()]
    rows = [
        [
            label,
            f"{law.coefficient:.4e} * {x}^{law.exponent:.4f}",
            ci(law.exponent_ci) or NOT_IDENTIFIED,
            ci(law.coefficient_ci) or NOT_IDENTIFIED,
        ]
        for label, x, law in named
    ]
    lines += _table(["law", "fit", "exponent CI", "coefficient CI"], rows)
    if a.loss_saturating is not None:
        s = a.loss_saturating
        lines.append(
            f"  L*(C) with a floor: {g(s.irreducible)} {ci(s.irreducible_ci)} + "
            f"{s.coefficient:.4e} * C^-{s.decay:.4f} {ci(s.decay_ci)}"
        )
    return lines


def _parametric_text(a: Analysis) -> list[str]:
    f = a.parametric
    if f is None:
        return []
    iv = f.intervals
    boot = bool(iv)

    def par(name: str, value: float) -> str:
        if name in f.at_bound:
            return f"{name} = {g(value)} (on its optimizer bound: not identified)"
        shown = ci(iv.get(name)) or (NOT_IDENTIFIED if boot else "")
        return f"{name} = {g(value)} {shown}".rstrip()

    pe = ci(iv.get("params_exponent")) or (NOT_IDENTIFIED if boot else "")
    te = ci(iv.get("tokens_exponent")) or (NOT_IDENTIFIED if boot else "")
    return [
        "Parametric fit: L(N, D) = E + A / N^alpha + B / D^beta (Huber on log L)",
        f"  {par('E', f.E)}   {par('A', f.A)}   {par('B', f.B)}",
        f"  {par('alpha', f.alpha)}   {par('beta', f.beta)}",
        f"  implied N* ~ C^{f.params_exponent:.4f} {pe}, D* ~ C^{f.tokens_exponent:.4f} {te}",
    ]


def _predictions_text(a: Analysis) -> list[str]:
    if not a.predictions:
        return []
    rows = [
        [
            format_flops(p.budget),
            _pred(p.params),
            _pred(p.tokens),
            _pred(p.loss),
            g(p.parametric_params),
            g(p.parametric_loss),
        ]
        for p in a.predictions
    ]
    head = f"Predictions ({a.confidence:.0%} confidence interval [..], prediction interval {{..}})"
    return [head, *_table(["budget", "N*", "D*", "L*", "N* (parametric)", "L* (parametric)"], rows)]


def _hold_out_text(a: Analysis) -> list[str]:
    h = a.holdout
    if h is None:
        return []
    verdict: dict[bool | None, str] = {
        True: "inside its prediction interval",
        False: "OUTSIDE its prediction interval",
        None: "not comparable (no prediction interval)",
    }
    lines = [
        f"Hold-out check: fitted without {format_flops(h.budget)}, its N* predicted within "
        f"{h.params_error:+.1%} ({verdict[h.params_within]}) and L* within "
        f"{h.loss_error:+.2%} ({verdict[h.loss_within]})."
    ]
    if h.params_within and h.loss_within is False and h.loss_error < 0:
        lines.append(
            "  L* fell below a pure power law's prediction: the loss flattens towards a floor "
            "(compare the law with a floor, --irreducible)."
        )
    return lines


NOT_IDENTIFIED = "not identified"


def _bracketed(inside: bool, fraction: float | None) -> str:
    word = "yes" if inside else "NO"
    return word if fraction is None else f"{word} ({fraction:.0%})"


def _pred(p: Predicted | None) -> str:
    if p is None:
        return "-"
    pi = "" if p.pi is None else f" {{{g(p.pi.low, 3)}, {g(p.pi.high, 3)}}}"
    return f"{g(p.value)} {ci(p.ci, 3)}{pi}".strip()


def format_comparison(c: Comparison, first: str, second: str) -> str:
    lines = [f"Exponents: {first} vs {second} (difference with its interval)"]
    names = {"params": "N*", "tokens": "D*", "loss": "L*"}
    lines += _table(
        ["law", first, second, "difference", "interval", "significant"],
        [
            [
                names[d.law],
                f"{d.first:.4f}",
                f"{d.second:.4f}",
                f"{d.difference:+.4f}",
                ci(d.ci),
                "yes" if d.significant else "no",
            ]
            for d in c.differences
        ],
    )
    who = {"first": first, "second": second}.get(c.more_data)
    if who is None:
        lines.append(
            "Neither puts measurably more of extra compute into data (the D* exponents' "
            "difference interval holds 0, or has no resamples)."
        )
    else:
        lines.append(f"{who} allocates more of extra compute to data (larger D* exponent).")
    return "\n".join(lines)
