"""A ScalingSweep document: reading YAML as Kubernetes does, validating a manifest, and one
sentence for every problem."""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from isoflop.api import kubeyaml
from isoflop.api.base import (
    API_VERSION,
    DNS_LABEL_PATTERN,
    KIND,
    LABEL_KEY_PATTERN,
    NAME_MAX_LENGTH,
    NAME_RULE,
    PATTERN_RULES,
    ManifestError,
    Model,
)
from isoflop.api.spec import DnsLabel, LabelKey, LabelValue, ScalingSweepSpec
from isoflop.api.status import ScalingSweepStatus

# Every annotation of an object together: the API server's limit (TotalAnnotationSizeLimitB).
ANNOTATIONS_LIMIT = 256 * 1024
# What a sweep's own annotations may take of it: kopf keeps a copy of them in its
# last-handled-configuration annotation, and `kubectl apply` one more in last-applied: three
# copies and the spec twice must fit, or every patch of the operator's is refused (a 422 loop).
USER_ANNOTATIONS_LIMIT = 64 * 1024
# The annotations that are not the user's own: kopf's bookkeeping and kubectl's copy.
OWN_ANNOTATION_PREFIXES = ("kopf.zalando.org/", "kopf.dev/", "kubectl.kubernetes.io/")
GENERATED_SUFFIX = 5  # the API server appends 5 random characters to a generateName

QualifiedName = Annotated[str, Field(min_length=1, max_length=317, pattern=LABEL_KEY_PATTERN)]


class OwnerReference(Model):
    """metadata.ownerReferences[]: the API server requires each of the four identifying fields."""

    api_version: Annotated[str, Field(min_length=1)]
    kind: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]
    uid: Annotated[str, Field(min_length=1)]
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(Model):
    """metadata as the API server validates it on create: a name (or a generateName to make
    one), a namespace that is a DNS label, qualified finalizer and annotation keys, owner
    references with their uid, annotations within the limits, and no field ObjectMeta lacks."""

    name: str | None = None
    generate_name: str | None = None
    namespace: DnsLabel | None = None
    labels: dict[LabelKey, LabelValue] | None = None
    annotations: dict[LabelKey, str] | None = None  # keys are qualified names, as labels'
    finalizers: list[QualifiedName] | None = None
    owner_references: list[OwnerReference] | None = None
    # what the server sets, read back from a stored object
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    self_link: str | None = None
    managed_fields: list[JsonValue] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if len(v) > NAME_MAX_LENGTH or not re.match(DNS_LABEL_PATTERN, v):
            raise ValueError(NAME_RULE)
        return v

    @field_validator("annotations")
    @classmethod
    def _annotations_size(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        total = sum(len(k.encode()) + len(a.encode()) for k, a in v.items())
        if total > ANNOTATIONS_LIMIT:
            raise ValueError(f"take {total} bytes, more than the {ANNOTATIONS_LIMIT} allowed")
        return v

    @model_validator(mode="after")
    def _whole(self) -> ObjectMeta:
        if not self.name and not self.generate_name:
            raise ValueError("name is required (or generateName, for the server to make one)")
        made = (self.generate_name or "") + "x" * GENERATED_SUFFIX  # the server's name for it
        too_long = len(made) > NAME_MAX_LENGTH
        if not self.name and (too_long or not re.match(DNS_LABEL_PATTERN, made)):
            rule = NAME_RULE.removeprefix("must be ")
            raise ValueError(
                f"generateName must start a name that is {rule}, with the {GENERATED_SUFFIX} "
                f"characters the server adds: at most {NAME_MAX_LENGTH - GENERATED_SUFFIX} "
                "characters"
            )
        own = sum(
            len(k.encode()) + len(v.encode())
            for k, v in (self.annotations or {}).items()
            if not k.startswith(OWN_ANNOTATION_PREFIXES)
        )
        if own > USER_ANNOTATIONS_LIMIT:
            raise ValueError(
                f"annotations take {own} bytes, more than a sweep's {USER_ANNOTATIONS_LIMIT}: "
                "the operator's and kubectl's copies of them must fit the object's "
                f"{ANNOTATIONS_LIMIT}"
            )
        return self


class ScalingSweep(Model):
    """A whole ScalingSweep object, as in a manifest file or the cluster."""

    api_version: Literal["isoflop.dev/v1alpha1"] = "isoflop.dev/v1alpha1"
    kind: Literal["ScalingSweep"] = "ScalingSweep"
    metadata: ObjectMeta
    spec: ScalingSweepSpec
    status: ScalingSweepStatus | None = None

    @property
    def name(self) -> str:
        """The sweep's name; for a manifest with only a generateName, that prefix without its
        last '-' (the run directory of `isoflop run`, the name validate shows)."""
        return self.metadata.name or (self.metadata.generate_name or "").rstrip("-")


def yaml_load(text: str) -> Any:
    """Parse one YAML document as kubectl does (isoflop.api.kubeyaml: 1e17 a float, 0o7 an
    integer, 1:30 a string)."""
    return kubeyaml.load(text)


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


def known_field(path: tuple[str, ...]) -> bool:
    """Whether a key of a manifest is a field of ScalingSweep (a key of a free-form map is)."""
    fields = _known_fields(ScalingSweep, path[:-1])
    return not fields or path[-1] in fields


def _flatten(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    return [annotation] if not args else [a for arg in args for a in _flatten(arg)]


MAX_PROBLEMS = 5  # named in one sentence; more are counted

# a field named in a rule's sentence relative to the model that states it: fit.holdOutBudget
_RELATIVE = re.compile(r"(?<![\w./:])([a-z][A-Za-z0-9]*)((?:\.[a-z][A-Za-z0-9]*)*)(?![\w(/:])")


def _qualified(msg: str, path: str, fields: set[str]) -> str:
    """A cross-field rule's sentence with every field it names by its full path
    (spec.fit.holdOutBudget, not fit.holdOutBudget): dotted names anywhere, and a bare field
    name that starts the sentence."""

    def full(m: re.Match[str]) -> str:
        dotted = bool(m.group(2)) or m.start() == 0
        return f"{path}.{m.group(0)}" if dotted and m.group(1) in fields else m.group(0)

    return _RELATIVE.sub(full, msg)


def describe_validation_error(err: ValidationError, prefix: str = "", model: Any = None) -> str:
    """One sentence naming every offending field (up to MAX_PROBLEMS), an unknown key with the
    known one it is closest to."""
    problems = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = bool(loc) and loc[-1] == "[key]"  # a map's key, not its value: the map is the field
        path = _field_path(loc[:-2] if key else loc)
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
        elif (
            e["type"] == "string_pattern_mismatch"
            and (e.get("ctx") or {}).get("pattern") in PATTERN_RULES
        ):
            msg = f"{PATTERN_RULES[e['ctx']['pattern']]}, not {e['input']!r}"
        if key:
            msg = f"key {loc[-2]!r}: {msg}"
        elif e["type"] == "value_error" and path:
            msg = _qualified(msg, path, set(_known_fields(model, loc)))
            if msg.startswith(f"{path}."):  # a rule across fields, named from the top
                problems.append(msg)
                continue
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


def parse_metadata(meta: Mapping[str, Any]) -> ObjectMeta:
    """Validate a sweep's metadata alone (as the admission webhook receives it)."""
    try:
        return ObjectMeta.model_validate(dict(meta), by_alias=True, by_name=False)
    except ValidationError as err:
        raise ManifestError(
            describe_validation_error(err, prefix="metadata", model=ObjectMeta)
        ) from None


def parse_spec(spec: Mapping[str, Any]) -> ScalingSweepSpec:
    """Validate a spec alone (as the operator receives it)."""
    try:
        return ScalingSweepSpec.model_validate(spec, by_alias=True, by_name=False)
    except ValidationError as err:
        raise ManifestError(
            describe_validation_error(err, prefix="spec", model=ScalingSweepSpec)
        ) from None


def read_manifests(path: str | Path) -> list[kubeyaml.Document]:
    """Every object of a manifest file, read as kubectl reads it (several documents, a v1 List's
    items, UTF-16 or a byte-order mark) and as the server creates it (fields set to null and
    the status dropped, each with a note); ManifestError when the file cannot be read."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise ManifestError(f"cannot read {p}: {err.strerror or err}") from None
    try:
        return kubeyaml.objects(kubeyaml.decode(data), known_field)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None)
        raise ManifestError(
            f"{p} is not valid YAML{where}" + (f": {problem}" if problem else "")
        ) from None
    except RecursionError:
        raise ManifestError(f"{p} nests too deep for a ScalingSweep manifest") from None


def sweep_documents(path: str | Path) -> list[kubeyaml.Document]:
    """The ScalingSweep objects of a manifest file (what kubectl would create of ours)."""
    return [
        d for d in read_manifests(path) if isinstance(d.obj, dict) and d.obj.get("kind") == KIND
    ]


def load_sweep(path: str | Path) -> ScalingSweep:
    """Read and validate a manifest file of one ScalingSweep; every failure is a ManifestError
    naming the problem."""
    docs = sweep_documents(path)
    if len(docs) != 1:
        raise ManifestError(
            f"{path} must hold exactly one {KIND}, found {len(docs)}"
            + (" (isoflop validate checks each of them)" if docs else "")
        )
    return parse_sweep(docs[0].obj)
