"""A ScalingSweep document: reading YAML as Kubernetes does, validating a manifest, and one
sentence for every problem."""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    field_validator,
)

from isoflop.api.base import (
    API_VERSION,
    DNS_LABEL_PATTERN,
    KIND,
    NAME_MAX_LENGTH,
    NAME_RULE,
    ManifestError,
    Model,
)
from isoflop.api.spec import ScalingSweepSpec
from isoflop.api.status import ScalingSweepStatus


class ObjectMeta(Model):
    model_config = ConfigDict(extra="allow")
    name: str
    namespace: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if len(v) > NAME_MAX_LENGTH or not re.match(DNS_LABEL_PATTERN, v):
            raise ValueError(NAME_RULE)
        return v


class ScalingSweep(Model):
    """A whole ScalingSweep object, as in a manifest file or the cluster."""

    api_version: Literal["isoflop.dev/v1alpha1"] = "isoflop.dev/v1alpha1"
    kind: Literal["ScalingSweep"] = "ScalingSweep"
    metadata: ObjectMeta
    spec: ScalingSweepSpec
    status: ScalingSweepStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e17 as a float (YAML 1.2, as Kubernetes does), not a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][-+]?\d+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """Parse YAML the way Kubernetes does for numbers (1e17 is a float)."""
    return yaml.load(text, Loader=_Loader)


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not part.startswith("function-"):  # pydantic's names for validator wrappers
            path += f".{part}" if path else part
    return path


def _known_fields(model: Any, loc: tuple[int | str, ...]) -> list[str]:
    """The camelCase keys allowed at `loc` below `model` (for a did-you-mean); [] if unknown."""
    for part in loc:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return []
        models = [a for a in _flatten(field.annotation) if isinstance(a, type)]
        model = next((m for m in models if issubclass(m, BaseModel)), None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or n for n, f in model.model_fields.items()]
    return []


def _flatten(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    return [annotation] if not args else [a for arg in args for a in _flatten(arg)]


MAX_PROBLEMS = 5  # named in one sentence; more are counted


def describe_validation_error(err: ValidationError, prefix: str = "", model: Any = None) -> str:
    """One sentence naming every offending field (up to MAX_PROBLEMS), an unknown key with the
    known one it is closest to."""
    problems = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = _field_path(loc)
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "is not a known field"
            close = difflib.get_close_matches(str(loc[-1]), _known_fields(model, loc[:-1]), n=1)
            if close:
                msg += f" (did you mean {close[0]}?)"
        elif e["type"] == "missing":
            msg = "is required"
        problems.append(f"{path}: {msg}" if path else msg)
    more = len(problems) - MAX_PROBLEMS
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
    return "; ".join(problems[:MAX_PROBLEMS]) + tail


def parse_sweep(obj: Mapping[str, Any]) -> ScalingSweep:
    """Validate a manifest dict; raises ManifestError with one sentence naming the field."""
    if not isinstance(obj, Mapping):
        raise ManifestError(
            "the manifest must be a mapping with apiVersion, kind, metadata and spec"
        )
    if obj.get("kind") != KIND or obj.get("apiVersion") != API_VERSION:
        raise ManifestError(
            f"expected apiVersion {API_VERSION} and kind {KIND}, "
            f"got {obj.get('apiVersion')!r} and {obj.get('kind')!r}"
        )
    try:
        return ScalingSweep.model_validate(obj, by_alias=True, by_name=False)
    except ValidationError as err:
        raise ManifestError(describe_validation_error(err, model=ScalingSweep)) from None
    except RecursionError:
        raise ManifestError("the manifest nests too deep for a ScalingSweep") from None


def parse_name(name: str) -> None:
    """Refuse a sweep name the operator cannot use in Job names and labels."""
    try:
        ObjectMeta(name=name)
    except ValidationError as err:
        raise ManifestError(describe_validation_error(err, prefix="metadata")) from None


def parse_spec(spec: Mapping[str, Any]) -> ScalingSweepSpec:
    """Validate a spec alone (as the operator receives it)."""
    try:
        return ScalingSweepSpec.model_validate(spec, by_alias=True, by_name=False)
    except ValidationError as err:
        raise ManifestError(
            describe_validation_error(err, prefix="spec", model=ScalingSweepSpec)
        ) from None


def load_sweep(path: str | Path) -> ScalingSweep:
    """Read and validate a manifest file; every failure is a ManifestError naming the problem."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ManifestError(f"cannot read {p}: {err.strerror or err}") from None
    try:
        docs = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ManifestError(f"{p} is not valid YAML{where}") from None
    except RecursionError:
        raise ManifestError(f"{p} nests too deep for a ScalingSweep manifest") from None
    sweeps = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if len(sweeps) != 1:
        raise ManifestError(f"{p} must hold exactly one {KIND}, found {len(sweeps)}")
    return parse_sweep(sweeps[0])
