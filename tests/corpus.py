"""A corpus of invalid ScalingSweep manifests: what `isoflop validate`, the API server and the
operator must all refuse alike.

Most manifests are generated from the CRD's own schema: for every field of the spec, a valid
manifest (the quickstart example, with the field's parents filled in validly when it has none) is
broken in one way the schema forbids: a wrong type ("4" for 4, "true" for true, a list for an
object), a value past a bound, a string off its pattern or too long, a value outside an enum, too
many or too few items, an unknown key, a snake_case key, a missing required key. The rest are
written by hand: rules that cross fields (the server stores those; the operator must refuse
them with a condition), names Kubernetes allows but a sweep cannot carry, nesting deep enough to
break a JSON decoder, and specs that validate but cannot be planned.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from isoflop import api
from isoflop.api import crd

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "examples" / "quickstart.yaml"

Path_ = tuple[str | int, ...]


def base_manifest() -> dict[str, Any]:
    return api.yaml_load(BASE.read_text())  # type: ignore[no-any-return]


def _valid(schema: dict[str, Any]) -> Any:
    """A small value the schema accepts (its default where it has one)."""
    if "default" in schema and schema["default"] not in ({}, None):
        return copy.deepcopy(schema["default"])
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _valid(props[k]) for k in schema.get("required", [])}
    if kind == "array":
        return [_valid(schema["items"]) for _ in range(schema.get("minItems", 0))]
    if kind == "integer":
        return max(int(schema.get("minimum", 1)), 1)
    if kind == "number":
        return float(schema.get("minimum", 0)) + 1.0 if "minimum" in schema else 1.0
    if kind == "boolean":
        return True
    if kind == "string":
        pattern = schema.get("pattern")
        for candidate in (
            "a",
            "1",
            "s3://bucket/prefix",
            "http://127.0.0.1:9090",
            "1h",
            "example.com/resource",
        ):
            if pattern is None or re.search(pattern, candidate):
                return candidate
        raise ValueError(f"no candidate string matches {pattern}")
    raise ValueError(f"cannot make a value for {schema}")


def _get(obj: Any, path: Path_) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def _ensure(manifest: dict[str, Any], path: Path_, schemas: list[dict[str, Any]]) -> bool:
    """Fill in the parents of `path` (and the field itself) with valid values where absent."""
    node: Any = manifest
    for key, schema in zip(path, schemas, strict=True):
        if isinstance(key, int):
            if not isinstance(node, list):
                return False
            while len(node) <= key:
                node.append(_valid(schema))
        elif key not in node or node[key] is None:
            node[key] = _valid(schema)
        node = node[key]
    return True


def _set(manifest: dict[str, Any], path: Path_, value: Any) -> None:
    _get(manifest, path[:-1])[path[-1]] = value


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _breaks_pattern(pattern: str) -> str:
    for candidate in ("Not Valid!", "UPPER", "-x-", "x y", ""):
        if not re.search(pattern, candidate):
            return candidate
    raise ValueError(f"every candidate matches {pattern}")


def _walk(
    schema: dict[str, Any], path: Path_, schemas: list[dict[str, Any]]
) -> Iterator[tuple[Path_, dict[str, Any], list[dict[str, Any]]]]:
    yield path, schema, schemas
    if schema.get("type") == "object":
        for key, sub in schema.get("properties", {}).items():
            yield from _walk(sub, (*path, key), [*schemas, sub])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            yield from _walk(extra, (*path, "some-key"), [*schemas, extra])
    elif schema.get("type") == "array":
        yield from _walk(schema["items"], (*path, 0), [*schemas, schema["items"]])


def _mutations(schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(what, value) pairs the schema refuses, for a field of this schema."""
    kind = schema.get("type")
    if kind in ("integer", "number"):
        yield "a numeric string", "4"
        yield "a boolean", True
        if kind == "integer":
            yield "a fraction", 1.5
        if "minimum" in schema:
            low = schema["minimum"]
            yield "below its minimum", low if schema.get("exclusiveMinimum") else low - 1
        if "maximum" in schema:
            high = schema["maximum"]
            yield "above its maximum", high if schema.get("exclusiveMaximum") else high * 2 + 1
    elif kind == "string":
        yield "a number", 7
        yield "a list", ["x"]
        if "enum" in schema:
            yield "outside its enum", "bogus"
        if "pattern" in schema:
            yield "off its pattern", _breaks_pattern(schema["pattern"])
        if "maxLength" in schema:
            yield "too long", "a" * (schema["maxLength"] + 1)
        if schema.get("minLength"):
            yield "too short", ""
    elif kind == "boolean":
        yield "a string", "true"
        yield "a number", 1
    elif kind == "array":
        yield "a string", "x"
        yield "an object", {"x": 1}
        if "maxItems" in schema:
            yield "too many items", [_valid(schema["items"])] * (schema["maxItems"] + 1)
        if schema.get("minItems"):
            yield "too few items", []
    elif kind == "object":
        yield "a string", "x"
        yield "a list", [1]
        if "properties" in schema:
            yield "an unknown key", "UNKNOWN"  # marker: add a key rather than set the value
        if "maxProperties" in schema:
            yield "too many keys", {f"k{i}": "v" for i in range(schema["maxProperties"] + 1)}


def schema_corpus() -> Iterator[tuple[str, dict[str, Any]]]:
    spec = crd.openapi_schema()["properties"]["spec"]
    base = base_manifest()
    for path, schema, schemas in _walk(spec, ("spec",), [spec]):
        if path == ("spec",):
            continue
        filled = copy.deepcopy(base)
        if not _ensure(filled, path, schemas):
            continue
        try:
            api.parse_sweep(filled)
        except api.ManifestError:
            continue  # the field cannot be filled in alone (e.g. depths beside configs)
        where = ".".join(str(p) for p in path)
        for what, value in _mutations(schema):
            broken = copy.deepcopy(filled)
            if value == "UNKNOWN":
                _get(broken, path)["bogusField"] = 1
            else:
                _set(broken, path, value)
            yield f"{where} {what}", broken
        # a camelCase key written in snake_case (the server knows only the camelCase one)
        key = path[-1]
        if isinstance(key, str) and _snake(key) != key and key != "some-key":
            broken = copy.deepcopy(filled)
            parent = _get(broken, path[:-1])
            parent[_snake(key)] = parent.pop(key)
            yield f"{where} in snake_case", broken
        # a required key left out
        for required in schema.get("required", []):
            broken = copy.deepcopy(filled)
            del _get(broken, path)[required]
            yield f"{where} without {required}", broken


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"key": "gpu", "operator": "Exists"}
    for _ in range(depth):
        node = {"nodeSelectorTerms": [node]}
    return node


def hand_corpus() -> Iterator[tuple[str, dict[str, Any]]]:
    base = base_manifest()

    def edit(what: str, change: Any) -> tuple[str, dict[str, Any]]:
        m = copy.deepcopy(base)
        change(m)
        return what, m

    spec = "spec"
    yield edit("name with a dot", lambda m: m["metadata"].__setitem__("name", "quick.start"))
    yield edit("name of 41 characters", lambda m: m["metadata"].__setitem__("name", "q" * 41))
    yield edit("name of 63 characters", lambda m: m["metadata"].__setitem__("name", "q" * 63))
    yield edit("name in upper case", lambda m: m["metadata"].__setitem__("name", "Quick"))
    yield edit("name ending in -", lambda m: m["metadata"].__setitem__("name", "quick-"))
    yield edit("no spec", lambda m: m.pop(spec))
    yield edit("spec a list", lambda m: m.__setitem__(spec, [1]))
    yield edit("no model", lambda m: m[spec].pop("model"))
    yield edit("no budgets", lambda m: m[spec].pop("budgets"))
    yield edit("budgets as strings", lambda m: m[spec].__setitem__("budgets", ["3e10", "6e10"]))
    yield edit("a budget repeated", lambda m: m[spec].__setitem__("budgets", [3e10, 3e10]))
    yield edit("a negative budget", lambda m: m[spec].__setitem__("budgets", [-3e10]))
    yield edit("a zero budget", lambda m: m[spec].__setitem__("budgets", [0]))
    yield edit("depths beside configs", lambda m: m[spec]["model"].__setitem__("depths", [2, 3]))
    yield edit("neither depths nor configs", lambda m: m[spec]["model"].pop("configs"))
    yield edit(
        "a depth repeated",
        lambda m: (m[spec]["model"].pop("configs"), m[spec]["model"].update(depths=[2, 2])),
    )
    yield edit(
        "width not a multiple of headDim",
        lambda m: (
            m[spec]["model"].pop("configs"),
            m[spec]["model"].update(depths=[2, 3], widthPerDepth=12),
        ),
    )
    yield edit(
        "rung names repeated",
        lambda m: m[spec]["model"]["configs"].append(dict(m[spec]["model"]["configs"][0])),
    )
    yield edit(
        "a rung whose width does not split into heads",
        lambda m: m[spec]["model"]["configs"].append({"name": "odd", "depth": 2, "width": 44}),
    )
    yield edit(
        "latentShape not divisible by patchSize",
        lambda m: m[spec]["data"].__setitem__("latentShape", [3, 18, 18]),
    )
    yield edit(
        "latentShape with a zero", lambda m: m[spec]["data"].__setitem__("latentShape", [3, 0, 16])
    )
    yield edit(
        "holdOutBudget not a budget", lambda m: m[spec]["fit"].__setitem__("holdOutBudget", 5e10)
    )
    yield edit("bootstrap 50", lambda m: m[spec]["fit"].__setitem__("bootstrap", 50))
    yield edit("betas of 1", lambda m: m[spec]["training"].__setitem__("betas", [0.9, 1.0]))
    yield edit("three betas", lambda m: m[spec]["training"].__setitem__("betas", [0.9, 0.9, 0.9]))
    yield edit(
        "budgets too close to tell apart",
        lambda m: m[spec].__setitem__("budgets", [3e10, 3.0000001e10]),
    )
    yield edit(
        "4,160 trials", lambda m: m[spec].__setitem__("budgets", [3e10 * 1.1**i for i in range(65)])
    )
    yield edit(
        "64 budgets x 9 rungs x 8 replicates",
        lambda m: (
            m[spec].__setitem__("budgets", [3e10 * 1.1**i for i in range(64)]),
            m[spec]["training"].__setitem__("replicates", 8),
        ),
    )
    yield edit("mlpRatio 1e-9", lambda m: m[spec]["model"].__setitem__("mlpRatio", 1e-9))
    yield edit(
        "budgets too small for any trial", lambda m: m[spec].__setitem__("budgets", [1e3, 2e3])
    )
    yield edit("confirm inside the grid", lambda m: m[spec].__setitem__("confirm", [1e11]))
    yield edit("confirm at the grid's top", lambda m: m[spec].__setitem__("confirm", [2.4e11]))
    yield edit(
        "confirm with the parabola fit only",
        lambda m: (
            m[spec].__setitem__("confirm", [1e12]),
            m[spec]["fit"].__setitem__("method", "parabola"),
        ),
    )
    yield edit(
        "confirm over configs with no shape rule",
        lambda m: (
            m[spec].__setitem__("confirm", [1e12]),
            m[spec]["model"]["configs"].append({"name": "deep", "depth": 3, "width": 72}),
        ),
    )
    yield edit(
        "a confirmation shape whose width does not split into its heads",
        lambda m: (
            m[spec].__setitem__("confirm", [1e12]),
            m[spec].__setitem__(
                "confirmation", {"shapes": [{"depth": 2, "width": 100, "heads": 3}]}
            ),
        ),
    )
    yield edit("a confirm budget repeated", lambda m: m[spec].__setitem__("confirm", [1e12, 1e12]))
    required = "requiredDuringSchedulingIgnoredDuringExecution"
    for depth in (30, 100, 1000):
        yield edit(
            f"affinity nested {depth} deep",
            lambda m, d=depth: (
                m[spec]
                .setdefault("resources", {})
                .__setitem__("affinity", {"nodeAffinity": {required: _nested(d)}})
            ),
        )
    yield edit(
        "affinity of unknown shape",
        lambda m: (
            m[spec]
            .setdefault("resources", {})
            .__setitem__("affinity", {"gpuAffinity": {"a": {"b": {"c": 1}}}})
        ),
    )
    yield edit(
        "a node selector with an object value",
        lambda m: m[spec].setdefault("resources", {}).__setitem__("nodeSelector", {"a": {"b": 1}}),
    )


def pod_corpus() -> Iterator[tuple[str, dict[str, Any]]]:
    """Values that reach a pod, broken the ways Kubernetes' own rules refuse (label keys and
    values, tolerations, image references, URLs, integer ranges) or that train nothing."""
    base = base_manifest()

    def edit(what: str, path: str, value: Any) -> tuple[str, dict[str, Any]]:
        m = copy.deepcopy(base)
        node = m
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
        return what, m

    selector = "spec.resources.nodeSelector"
    yield edit("a nodeSelector key that is not a label key", selector, {"gpu type!": "a"})
    yield edit("a nodeSelector key with an upper-case prefix", selector, {"Example.com/gpu": "a"})
    yield edit("a nodeSelector key of 64 characters", selector, {"k" * 64: "a"})
    yield edit("a NUL byte in a nodeSelector value", selector, {"gpu": "a\x00b"})
    yield edit("a nodeSelector value with a space", selector, {"gpu": "a b"})
    yield edit("a nodeSelector value ending in -", selector, {"gpu": "h100-"})
    tolerations = "spec.resources.tolerations"
    yield edit(
        "a toleration with operator Exists and a value",
        tolerations,
        [{"key": "gpu", "operator": "Exists", "value": "true"}],
    )
    yield edit("a toleration without a key and operator Equal", tolerations, [{"value": "true"}])
    yield edit(
        "tolerationSeconds with effect NoSchedule",
        tolerations,
        [{"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": 60}],
    )
    yield edit(
        "tolerationSeconds with no effect",
        tolerations,
        [{"key": "gpu", "operator": "Exists", "tolerationSeconds": 60}],
    )
    yield edit(
        "a toleration key that is not a label key",
        tolerations,
        [{"key": "not a key", "operator": "Exists"}],
    )
    yield edit(
        "tolerationSeconds beyond 64 bits",
        tolerations,
        [{"key": "gpu", "effect": "NoExecute", "tolerationSeconds": 2**70}],
    )
    image = "spec.resources.image"
    yield edit("an image that is not an image reference", image, "Not An Image!")
    yield edit("an image with an upper-case path", image, "registry.example.com/Team/trainer")
    yield edit("an image with an empty tag", image, "trainer:")
    yield edit("an image with a short digest", image, "trainer@sha256:abc")
    yield edit("a Prometheus URL with a space", "spec.metrics.prometheusUrl", "http://prom etheus")
    yield edit("a Prometheus URL with no host", "spec.metrics.prometheusUrl", "http:///x")
    yield edit("an s3 source with a space in the bucket", "spec.data.source", "s3://my bucket/x")
    yield edit("an s3 source with a non-ASCII bucket", "spec.data.source", "s3://bücket/x")
    yield edit("an s3 source with a one-letter bucket", "spec.data.source", "s3://b/x")
    yield edit("a data source with a control character", "spec.data.source", "file:///a\tb")
    yield edit("an unknown procedural dataset", "spec.data.source", "procedural://faces")
    yield edit("an s3 source with an upper-case bucket", "spec.data.source", "s3://My-Bucket/x")
    yield edit("an s3 source with .. in the bucket", "spec.data.source", "s3://my..bucket/x")
    yield edit("an s3 source with .- in the bucket", "spec.data.source", "s3://my.-bucket/x")
    yield edit("an s3 source whose bucket is an IP", "spec.data.source", "s3://192.168.1.10/x")
    yield edit("an s3 source whose bucket starts xn--", "spec.data.source", "s3://xn--bucket/x")
    yield edit("an s3 validation source with .. in it", "spec.data.validationSource", "s3://a..b/x")
    yield edit(
        "checkpoints in a bucket named as an IP", "spec.storage.checkpoints", "s3://10.0.0.1/c"
    )
    yield edit("checkpoints with an upper-case bucket", "spec.storage.checkpoints", "s3://Ckpt/c")
    yield edit("checkpoints with a control character", "spec.storage.checkpoints", "s3://ck/a\x01b")
    yield edit("checkpoints as a relative file path", "spec.storage.checkpoints", "file://ckpt")
    yield edit(
        "checkpoints in a bucket ending -s3alias", "spec.storage.checkpoints", "s3://b-s3alias"
    )
    url = "spec.metrics.prometheusUrl"
    yield edit("a Prometheus URL with port 65536", url, "http://prometheus:65536")
    yield edit("a Prometheus URL with port 0", url, "http://prometheus:0/")
    yield edit("a Prometheus URL with a NUL", url, "http://prometheus/a\x00b")
    yield edit("a Prometheus URL with a DEL", url, "http://prometheus/a\x7fb")
    yield edit("a Prometheus URL with a DEL in the host", url, "http://prom\x7fetheus/")
    yield edit("a lookback of 10^20 days", "spec.metrics.lookback", "1" + "0" * 20 + "d")
    yield edit("a lookback of zero", "spec.metrics.lookback", "0s")
    yield edit("a sharedMemory of 40 digits", "spec.storage.sharedMemory", "9" * 40)
    yield edit("a batch that does not split over 3 GPUs", "spec.resources", {"gpusPerNode": 3})
    yield edit(
        "a batch that does not split over the confirmation's GPUs",
        "spec",
        {
            **base["spec"],
            "confirm": [1e12],
            "confirmation": {"gpusPerNode": 3},
            "fit": {**base["spec"]["fit"], "method": "both"},
        },
    )
    yield edit(
        "two confirm budgets that make one trial id",
        "spec",
        {
            **base["spec"],
            "confirm": [7e12, 7.000001e12],
            "fit": {**base["spec"]["fit"], "method": "both"},
        },
    )
    yield edit("maxFailedTrials of 1e30 written out", "spec.retries.maxFailedTrials", 10**30)
    yield edit("maxFailedTrials above the largest sweep", "spec.retries.maxFailedTrials", 4097)
    yield edit("fit.seed of 2^64", "spec.fit.seed", 2**64)
    yield edit("training.minSteps of 2^63", "spec.training.minSteps", 2**63)
    yield edit("a latentShape item of 2^40", "spec.data.latentShape", [4, 2**40, 32])
    yield edit("a budget of 1e31", "spec.budgets", [3e10, 1e31])
    yield edit("a budget of 1e-320", "spec.budgets", [1e-320, 3e10, 6e10, 1.2e11, 2.4e11])
    yield edit("a budget that trains no model", "spec.budgets", [10.0, 3e10, 6e10, 1.2e11])
    yield edit("metadata.labels a string", "metadata.labels", "team=ml")
    yield edit("a metadata label key with a space", "metadata.labels", {"my team": "ml"})
    yield edit("a metadata label value of 64 characters", "metadata.labels", {"team": "m" * 64})
    yield edit("a metadata annotation key with a space", "metadata.annotations", {"a b": "c"})
    yield edit("a namespace that is not a DNS label", "metadata.namespace", "Team_A")
    yield edit("a finalizer that is not a qualified name", "metadata.finalizers", ["a b/c d"])
    yield edit(
        "an ownerReference without its uid",
        "metadata.ownerReferences",
        [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner"}],
    )
    yield edit("annotations over 256 KiB", "metadata.annotations", {"a": "x" * 270_000})
    yield edit("an unknown metadata field", "metadata.owner", "me")


def _required_nodes(*expressions: Any, fields: Any = None) -> dict[str, Any]:
    term = {"matchFields": fields} if fields else {"matchExpressions": list(expressions)}
    required = {"nodeSelectorTerms": [term]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}


def child_corpus() -> list[tuple[str, dict[str, Any]]]:
    """Sweeps the offline rules take whose children the API server refuses: what only its dry
    run of a trial's Job and pod finds (isoflop.cluster.dryrun). tests/e2e/test_corpus.py sends
    them to the operator; each must end InvalidSpec with the server's sentence, no Job made."""
    base = base_manifest()

    def edit(what: str, resources: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        m = copy.deepcopy(base)
        m["spec"]["resources"] = resources
        return what, m

    return [
        edit("node affinity In without values", {
            "affinity": _required_nodes({"key": "zone", "operator": "In"})}),
        edit("node affinity Exists with values", {
            "affinity": _required_nodes({"key": "zone", "operator": "Exists", "values": ["a"]})}),
        edit("node affinity Gt with two values", {
            "affinity": _required_nodes({"key": "gen", "operator": "Gt", "values": ["1", "2"]})}),
        edit("node affinity matchFields on another key", {
            "affinity": _required_nodes(fields=[
                {"key": "metadata.namespace", "operator": "In", "values": ["a"]}])}),
        edit("pod affinity matchLabelKeys without a selector", {"affinity": {"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "zone", "matchLabelKeys": ["app"]}]}}}),
        edit("a PriorityClass that does not exist", {"priorityClassName": "no-such-priority"}),
        edit("a ServiceAccount that does not exist", {"serviceAccountName": "no-such-account"}),
    ]  # fmt: skip


def invalid_manifests() -> list[tuple[str, dict[str, Any]]]:
    """Every manifest of the corpus, with a short description of how it is broken."""
    seen: set[str] = set()
    out = []
    for what, manifest in [*hand_corpus(), *pod_corpus(), *schema_corpus()]:
        if what not in seen:
            seen.add(what)
            out.append((what, manifest))
    return out


def write_corpus(directory: Path) -> dict[str, str]:
    """Each manifest as a JSON file (JSON is YAML) in `directory`: {file name: description}."""
    import json
    import sys

    directory.mkdir(parents=True, exist_ok=True)
    names = {}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))  # only to write the deepest ones
    try:
        for i, (what, manifest) in enumerate(invalid_manifests()):
            name = f"{i:04d}.json"
            (directory / name).write_text(json.dumps(manifest))
            names[name] = what
    finally:
        sys.setrecursionlimit(limit)
    return names
