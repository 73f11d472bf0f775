"""A class family's ladder: each rung's constructor arguments, and the measures that size it.

The built-in DiTs are counted by formula (`isoflop_trainer.config`); a diffusers or custom
family's rungs are `ClassConfig`s whose parameters and FLOPs come from the model check, run in the
trainer's environment (`isoflop_trainer.modelcheck`: locally by `isoflop run`, on a cluster as a
Job). `measured` attaches the check's result to a spec, and the planner sizes trials from it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from isoflop import api
from isoflop_trainer.families import DIFFUSERS_CLASSES, ClassConfig, Measure


def rung_arguments(spec: api.ScalingSweepSpec) -> list[tuple[str, dict[str, Any]]]:
    """Each rung's name and its arguments: model.arguments, then the shape rule's for a depth
    (diffusers classes), then the rung's own."""
    m = spec.model
    rule = DIFFUSERS_CLASSES.get(m.transformer or "")
    out: list[tuple[str, dict[str, Any]]] = []
    for depth in m.depths:
        assert rule is not None  # the spec allows depths only with a shape rule
        width = m.width_per_depth * depth
        sized = rule.arguments(depth, width // m.head_dim, m.head_dim)
        out.append((f"d{depth:02d}", {**m.arguments, **sized}))
    for c in m.configs:
        sized = {}
        if rule is not None and c.depth is not None and c.width is not None:
            heads = c.heads or c.width // m.head_dim
            sized = rule.arguments(c.depth, heads, c.width // heads)
        out.append((c.name, {**m.arguments, **sized, **c.arguments}))
    return out


def class_configs(spec: api.ScalingSweepSpec) -> list[tuple[str, ClassConfig]]:
    """The rungs of a class family as the model check builds them (no measure yet)."""
    m, d = spec.model, spec.data
    assert m.is_class_family
    assert m.transformer is not None
    channels, height, width = d.latent_shape
    return [
        (
            name,
            ClassConfig(
                family=m.family,  # type: ignore[arg-type]
                transformer=m.transformer,
                arguments=arguments,
                latent_channels=channels,
                latent_height=height,
                latent_width=width,
                text_length=d.text_length,
                text_dim=d.text_dim,
            ),
        )
        for name, arguments in rung_arguments(spec)
    ]


def check_request(spec: api.ScalingSweepSpec) -> tuple[dict[str, dict[str, Any]], str]:
    """What the model check is asked (each rung's ClassConfig request, in ladder order) and its
    digest: a check of other rungs (another ladder, other arguments) is not this sweep's."""
    requests = {name: cfg.request() for name, cfg in class_configs(spec)}
    text = json.dumps(requests, sort_keys=True)
    return requests, hashlib.sha256(text.encode()).hexdigest()[:16]


def rung_field(spec: api.ScalingSweepSpec, name: str) -> str:
    """Where in the spec a rung comes from: its configs entry, or the depth ladder."""
    names = [c.name for c in spec.model.configs]
    if name in names:
        return f"spec.model.configs[{names.index(name)}]"
    return "spec.model.depths"


def by_digest(spec: api.ScalingSweepSpec, measures: dict[str, Measure]) -> dict[str, Measure]:
    """Measures by rung name, as the planner looks them up (by ClassConfig digest)."""
    return {cfg.digest(): measures[name] for name, cfg in class_configs(spec) if name in measures}


def measured(spec: api.ScalingSweepSpec, measures: dict[str, Measure]) -> api.ScalingSweepSpec:
    """The spec with its model check's measures (by ClassConfig digest) attached."""
    model = spec.model.model_copy()
    model._measures = dict(measures)
    return spec.model_copy(update={"model": model})


def unchecked(spec: api.ScalingSweepSpec) -> list[str]:
    """The rungs of a class family that have no measure yet."""
    if not spec.model.is_class_family:
        return []
    have = spec.model.measures
    return [name for name, cfg in class_configs(spec) if cfg.digest() not in have]


def check_status(
    spec: api.ScalingSweepSpec, torch: str | None = None
) -> api.ModelCheckStatus | None:
    """The status's `modelCheck` of a spec whose rungs are all measured (None for a built-in
    family): every rung's measure by name, with the rungs' digest."""
    if not spec.model.is_class_family:
        return None
    table = spec.model.measures
    rungs = {
        name: api.RungMeasure.model_validate(vars(table[cfg.digest()]))
        for name, cfg in class_configs(spec)
    }
    return api.ModelCheckStatus(
        ready=True,
        request=check_request(spec)[1],
        rungs=rungs,
        torch=torch,
        message=f"{len(rungs)} rungs of {spec.model.transformer} measured",
    )
