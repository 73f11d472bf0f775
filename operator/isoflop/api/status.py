"""The status of a ScalingSweep: what the operator and `isoflop run` write back."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
)

from isoflop.api.base import Model
from isoflop_trainer.counts import FlopsAccounting

Phase = Literal["Pending", "Running", "Fitting", "Confirming", "Succeeded", "Failed"]
TrialPhase = Literal[
    "Pending", "Queued", "Running", "Succeeded", "Failed", "Cancelled", "Infeasible", "Skipped"
]
ResultSource = Literal["prometheus", "termination-message", "results-file", "simulated"]


class Condition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""


class TrialRecord(Model):
    """A compact per-trial record (hundreds of trials must fit far under etcd's object limit)."""

    id: str
    phase: TrialPhase
    params: int
    tokens: int
    attempts: int = 0
    loss: float | None = None
    source: ResultSource | None = None
    metrics: dict[str, float] | None = Field(
        default=None, description="fid, bpd, loss_se: what the trial measured beside its loss."
    )
    error: str | None = Field(default=None, description="Why a failed trial failed, in short.")
    kind: Literal["stable", "branch", "tuning"] | None = Field(
        default=None,
        description="branch: a trial trained as a WSD cooldown from a stable run's checkpoint; "
        "stable: a segment of a rung's constant-rate run (not a point of the fit); tuning: a "
        "trial of the tuning stage (not a point of the fit); unset: a trial trained from "
        "scratch.",
    )
    learning_rate: float | None = Field(
        default=None,
        description="The peak learning rate it trains at: a tuning trial's, or the tuning law's "
        "for its N and D; unset: training.learningRate under its scaling rule.",
    )
    global_batch_size: int | None = Field(
        default=None,
        description="The global batch it trains at where the tuning stage tunes batches: a "
        "tuning trial's, or the batch law's for its D; unset: training.globalBatchSize.",
    )
    branched_from: str | None = Field(
        default=None, description="The stable segment whose last checkpoint it starts from."
    )
    branch_step: int | None = None


class BudgetSummary(Model):
    """One budget's trials at a glance: the status stays small at any sweep size (the per-trial
    records live in the ConfigMap named by `records` on a cluster, in status.json locally)."""

    budget: float
    trials: int = Field(description="Planned trials (infeasible ones not counted).")
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    queued: int = Field(
        default=0, description="Launched and waiting in the cluster's queue (Kueue), not running."
    )
    pending: int = 0
    infeasible: int = 0
    skipped: int = 0
    best_trial: str | None = Field(default=None, description="The trial of lowest loss so far.")
    best_loss: float | None = None
    records: str | None = Field(
        default=None, description="The ConfigMap with this budget's per-trial records."
    )


class TrialCounts(Model):
    total: int = 0
    pending: int = 0
    running: int = 0
    starting: int = Field(
        default=0,
        description="Trials launched whose pods do not run yet: being created, pulling their "
        "image, or waiting for a node (the sweep's message says when none can take them).",
    )
    queued: int = Field(
        default=0,
        description="Trials whose Job waits in the cluster's queue (Kueue): created, suspended, "
        "not admitted yet or evicted; they count towards parallelism.",
    )
    succeeded: int = 0
    failed: int = 0
    infeasible: int = 0
    skipped: int = Field(default=0, description="Trials the adaptive ladder left out.")


class Interval(Model):
    low: float
    high: float


class BudgetFit(Model):
    """The isoFLOP parabola of one budget: loss = a*x^2 + b*x + c with x = log10(N)."""

    budget: float
    points: int
    a: float
    b: float
    c: float
    params_opt: float | None = None  # None when the loss does not curve upward
    tokens_opt: float | None = None
    loss_opt: float | None = None
    bracketed: bool
    advice: str | None = None
    params_opt_interval: Interval | None = None
    loss_opt_interval: Interval | None = None
    bracketed_fraction: float | None = Field(
        default=None, description="Share of resamples whose minimum stays inside the ladder."
    )


class PowerLaw(Model):
    """y = coefficient * x^exponent, x the budget C (or the loss, for metric-vs-loss laws)."""

    coefficient: float
    exponent: float
    points: int
    coefficient_interval: Interval | None = None
    exponent_interval: Interval | None = None


class SaturatingLaw(Model):
    """y = irreducible + coefficient * C^-decay."""

    irreducible: float
    coefficient: float
    decay: float
    irreducible_interval: Interval | None = None
    decay_interval: Interval | None = None


class Laws(Model):
    params: PowerLaw | None = None
    tokens: PowerLaw | None = None
    loss: PowerLaw | None = None
    loss_saturating: SaturatingLaw | None = None
    metrics: dict[str, PowerLaw] = Field(default_factory=dict, description="Metric at N* vs C.")
    metrics_vs_loss: dict[str, PowerLaw] = Field(default_factory=dict)


class ParametricLaw(Model):
    """Chinchilla Approach 3: L(N, D) = E + A / N^alpha + B / D^beta."""

    E: float = Field(alias="E")
    A: float = Field(alias="A")
    B: float = Field(alias="B")
    alpha: float
    beta: float
    params_exponent: float
    tokens_exponent: float
    params_exponent_interval: Interval | None = None
    tokens_exponent_interval: Interval | None = None
    intervals: dict[str, Interval] = Field(
        default_factory=dict, description="E, A, B, alpha, beta where identified."
    )
    at_bound: list[str] = Field(
        default_factory=list, description="Parameters on an optimizer bound: not identified."
    )


class Estimate(Model):
    """A prediction: the confidence interval says where the law lies, the prediction interval
    where a new measurement would fall."""

    value: float
    confidence: Interval | None = None
    prediction: Interval | None = None


class Prediction(Model):
    budget: float
    params: Estimate | None = None
    tokens: Estimate | None = None
    loss: Estimate | None = None
    metrics: dict[str, Estimate] = Field(default_factory=dict)
    parametric_params: float | None = None
    parametric_loss: float | None = None


class HoldOutCheck(Model):
    """The largest (or chosen) budget left out of the fit, predicted, and compared."""

    budget: float
    params_error: float
    loss_error: float
    within_prediction_interval: bool | None = None  # None: no interval to compare with
    params_within: bool | None = None  # N* alone
    loss_within: bool | None = None  # L* alone (a loss with a floor bends away from a power law)


class NoiseEstimate(Model):
    """How much one trial's loss scatters: the noise model behind every interval."""

    relative: float | None = None  # sd of log loss; None: not identified
    dof: float | None = None  # None: known exactly (given or measured)
    source: Literal["given", "measured", "replicates", "residuals", "none"] = "none"


class FitResult(Model):
    """Everything fitted from a sweep's results: the same on the resource and in `isoflop fit`."""

    noise: NoiseEstimate | None = None
    not_identified: list[str] = Field(
        default_factory=list, description="Quantities whose interval the design cannot give."
    )
    methods_agree: bool | None = Field(
        default=None, description="Parabola and parametric N* exponent intervals overlap."
    )
    budget_fits: list[BudgetFit] = Field(default_factory=list)
    laws: Laws = Field(default_factory=Laws)
    parametric: ParametricLaw | None = None
    predictions: list[Prediction] = Field(default_factory=list)
    hold_out: HoldOutCheck | None = None
    warnings: list[str] = Field(default_factory=list)


class DataStatus(Model):
    """What the check before launch found of the sweep's data (shards only)."""

    ready: bool | None = Field(
        default=None,
        description="true: checked and fits; false: missing or mismatched; null: being checked.",
    )
    samples: int | None = Field(default=None, description="Training samples in the index.")
    validation_samples: int | None = None
    epochs: list[float] | None = Field(
        default=None, description="[least, most] passes a planned trial makes over the data."
    )
    message: str = ""


class RungMeasure(Model):
    """One rung of a class family as the model check measured it (per sample, at batch 1)."""

    params: int
    non_embedding: int = Field(description="Parameters in the transformer's blocks.")
    forward: int = Field(description="Forward FLOPs per sample (torch.utils.flop_counter).")
    backward: int = Field(description="Backward FLOPs per sample.")
    attention: int = Field(description="Attention's score and value FLOPs, forward + backward.")
    tokens_per_sample: int
    depth: int
    width: int
    heads: int


class ModelCheckStatus(Model):
    """What the model check Job measured of a class family's rungs (diffusers or custom): the
    sweep is planned from these, since no formula counts such a model."""

    ready: bool | None = Field(
        default=None,
        description="true: every rung measured; false: the class refused one; null: checking.",
    )
    request: str = Field(
        default="", description="A digest of the rungs checked: another ladder checks again."
    )
    rungs: dict[str, RungMeasure] = Field(default_factory=dict)
    torch: str | None = Field(default=None, description="The torch that counted the FLOPs.")
    message: str = ""


class StrategyStatus(Model):
    """What the sweep's strategy trains, against the full grid trained from scratch."""

    full_grid_flops: float = Field(description="Every planned trial from scratch.")
    planned_flops: float = Field(
        description="What the strategy trains: stable runs charged once, branches their "
        "cooldowns, trials the adaptive ladder left out not at all (undecided ones counted)."
    )
    compute_fraction: float = Field(description="plannedFlops / fullGridFlops.")
    spent_flops: float = Field(description="Trained so far (succeeded runs).")
    branches: int = 0
    stable_segments: int = 0
    skipped: int = 0


class Confirmation(Model):
    """One confirmation run: the model the final laws call optimal at a budget above the grid,
    the loss they predict for it (written before it starts), and what it measured."""

    budget: float
    trial: str = Field(description="Its trial ID (confirm-BUDGET).")
    predicted_params: float | None = Field(
        default=None, description="N* the laws predict at this budget; null: not predicted."
    )
    depth: int | None = None
    width: int | None = None
    heads: int | None = None
    params: int | None = Field(
        default=None, description="Parameters of the chosen model: the family's nearest to N*."
    )
    tokens: int | None = None
    steps: int | None = None
    gpu_hours: float | None = Field(
        default=None, description="Estimated from the MFU curve (H100, bf16)."
    )
    predicted_loss: float | None = Field(
        default=None, description="The fitted surface L(N, D) at this model; null: not trained."
    )
    learning_rate: float | None = Field(
        default=None,
        description="The rate it trains at, from the tuning stage's law (spec.tuning); unset: "
        "training.learningRate under its scaling rule.",
    )
    global_batch_size: int | None = Field(
        default=None,
        description="The batch it trains at, from the tuning stage's batch law "
        "(spec.tuning.globalBatchSizes); unset: training.globalBatchSize.",
    )
    loss_interval: Interval | None = Field(
        default=None,
        description="Where one trial's loss falls (confidence below): the surface's "
        "uncertainty, one trial's noise and the form's drift beyond the grid; null: not "
        "identified (note says why).",
    )
    surface_interval: Interval | None = Field(
        default=None, description="Where the surface itself lies at this model."
    )
    form_error: float | None = Field(
        default=None,
        description="Relative error added for the surface's form at this distance beyond the "
        "grid (from the grid's check of its own extrapolation); null: not checked.",
    )
    confidence: float = 0.95
    predicted_metrics: dict[str, float] = Field(
        default_factory=dict, description="fid and other metrics, from their law against loss."
    )
    note: str | None = Field(default=None, description="What the prediction could not include.")
    phase: TrialPhase = "Pending"
    attempts: int = 0
    measured_loss: float | None = None
    metrics: dict[str, float] | None = None
    error: str | None = None
    half_widths: float | None = Field(
        default=None,
        description="(measured - predicted) in half-widths of the interval on that side: "
        "within +-1 is inside.",
    )
    inside: bool | None = Field(
        default=None, description="The measured loss lies in loss_interval; null: no verdict."
    )
    message: str | None = Field(default=None, description="The verdict in one sentence.")


class RateGroup(Model):
    """One (budget, rung) of the tuning stage: its optimum learning rate, once settled."""

    budget: float
    rung: str
    params: int
    tokens: int
    trials: int = Field(description="Learning rates chosen so far (the grid, widened at edges).")
    settled: bool = False
    best_learning_rate: float | None = Field(
        default=None, description="The minimum of the parabola in log learning rate."
    )
    edge: Literal["low", "high"] | None = Field(
        default=None, description="Its lowest loss sits at this edge of the grid, even widened."
    )
    problem: str | None = None
    batch_trials: int = Field(
        default=0, description="Batch sizes chosen so far (spec.tuning.globalBatchSizes)."
    )
    batch_settled: bool = False
    best_batch_size: float | None = Field(
        default=None,
        description="The minimum of the parabola in log batch size, at the best learning rate.",
    )
    batch_edge: Literal["low", "high"] | None = None
    batch_problem: str | None = None


class RateLaw(Model):
    """A tuning law: log10 eta* = log10 coefficient + paramsExponent log10 N + tokensExponent
    log10 D (+ computeExponent log10 C), or for the batch log10 B* = log10 coefficient +
    tokensExponent log10 D; exponents the stage cannot identify are null."""

    form: Literal["params-tokens", "compute", "params", "tokens", "constant"]
    description: str
    coefficient: float
    params_exponent: float | None = None
    tokens_exponent: float | None = None
    compute_exponent: float | None = None
    points: int
    residual_std: float = Field(description="Of log10 eta* around the law.")
    coefficient_interval: Interval | None = None
    params_exponent_interval: Interval | None = None
    tokens_exponent_interval: Interval | None = None
    compute_exponent_interval: Interval | None = None


class TuningStatus(Model):
    """The tuning stage (spec.tuning): its rungs' optima, the law, and what it cost."""

    phase: Literal["Tuning", "Tuned", "Failed"]
    message: str = ""
    trials: int = Field(description="Tuning trials chosen so far.")
    succeeded: int = 0
    planned_flops: float = Field(description="The compute of the chosen tuning trials.")
    grid_fraction: float = Field(
        description="That compute as a fraction of the full grid's (the stage's extra cost)."
    )
    groups: list[RateGroup] = Field(default_factory=list)
    law: RateLaw | None = None
    batch_law: RateLaw | None = Field(
        default=None, description="Set when spec.tuning.globalBatchSizes asks for batches."
    )


class TrackingStatus(Model):
    """Where the sweep's runs are tracked (spec.tracking), and what the tracker did not take."""

    experiment: str = Field(description="The MLflow experiment's name.")
    experiment_id: str | None = None
    experiment_url: str | None = Field(
        default=None, description="The experiment in the tracking server's UI."
    )
    fit_run_id: str | None = Field(default=None, description="The run of the fitted laws.")
    refits: int = Field(
        default=0,
        ge=0,
        description="Fits logged so far: the fit run's step (a restarted "
        "operator goes on from it).",
    )
    not_logged: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="What the tracker never took (it was down, or refused): the sweep itself "
        "succeeds without it.",
    )


class ScalingSweepStatus(Model):
    """The status both the operator and the local runner write."""

    phase: Phase = "Pending"
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    flops_accounting: FlopsAccounting | None = None
    progress: str = Field(default="0/0", description="Trials done / total, for kubectl get.")
    counts: TrialCounts = Field(default_factory=TrialCounts)
    budgets: list[BudgetSummary] = Field(default_factory=list)
    trials: list[TrialRecord] = Field(
        default_factory=list,
        description="Per-trial records: in status.json of a local run. The operator keeps them "
        "in one ConfigMap per budget (budgets[].records) and leaves this empty.",
    )
    fitted_budgets: list[float] = Field(
        default_factory=list, description="Budgets of the last fit."
    )
    fit: FitResult | None = None
    strategy: StrategyStatus | None = Field(
        default=None, description="Set when spec.strategy asks for adaptive ladders or branches."
    )
    tuning: TuningStatus | None = Field(
        default=None, description="Set when spec.tuning asks for a tuning stage."
    )
    data: DataStatus | None = None
    model_check: ModelCheckStatus | None = Field(
        default=None, description="Set for a diffusers or custom model family."
    )
    confirmations: list[Confirmation] = Field(
        default_factory=list,
        description="spec.confirm's runs: the predicted optimum at each budget above the grid, "
        "the loss to beat, and what it measured.",
    )
    tracking: TrackingStatus | None = Field(
        default=None, description="The sweep's MLflow experiment (spec.tracking.mlflow)."
    )
    children_checked: str | None = Field(
        default=None,
        max_length=64,
        description="A digest of the spec whose children (a trial's Job, pod and Service, the "
        "check and confirmation Jobs) the API server took in a dry run, before the first launch.",
    )
    admitted: dict[str, str] | None = Field(
        default=None,
        description="A digest of each field that defines the sweep (model.family, "
        "model.transformer, model.arguments, data, flopsAccounting) as first admitted: a spec "
        "that differs in one is refused, and nothing "
        "is done for it until the field is restored.",
    )
