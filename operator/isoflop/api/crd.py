"""Generate the ScalingSweep CustomResourceDefinition from the pydantic models in `isoflop.api`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema, to_jsonable_python

from isoflop import api

CRD_PATH = Path("crds") / "scalingsweep.yaml"
# The Helm chart installs the same file (helm applies crds/ verbatim, before the templates).
CHART_CRD_PATH = Path("helm") / "isoflop" / "crds" / "scalingsweep.yaml"

# Keys of JSON Schema that mean the same in Kubernetes' OpenAPI v3 subset and are kept as they are.
_KEPT = (
    "type",
    "description",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
    "format",
    "default",
)


class _DefaultsSchema(GenerateJsonSchema):
    """Emit defaults of `default_factory` fields too, so the API server fills them in."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().default_schema(schema)
        value = factory()  # type: ignore[call-arg]
        inner = self.generate_inner(schema["schema"])
        # A nested object defaults to {}: its own fields carry their defaults.
        inner["default"] = {} if isinstance(value, BaseModel) else to_jsonable_python(value)
        return inner


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Translate one pydantic JSON-schema node into a structural OpenAPI v3 schema node."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {node}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        # Not `nullable`: the server then prunes a null as it does for every other field, and
        # absent and null mean the same (a nullable field keeps a null, which an enum refuses
        # on `kubectl create` and `kubectl apply` drops; validate drops it, as the server does)
        optional = _structural({**options[0], **rest}, defs)
        if "default" in optional and optional["default"] is None:
            del optional["default"]  # absent and null mean the same; a null default is not allowed
        return optional

    out: dict[str, Any] = {k: node[k] for k in _KEPT if k in node}
    if "description" in out:  # a docstring's line breaks are not the reader's
        out["description"] = " ".join(out["description"].split())
    if "const" in node:
        out["enum"] = [node["const"]]
    if "exclusiveMinimum" in node:
        out["minimum"], out["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node:
        out["maximum"], out["exclusiveMaximum"] = node["exclusiveMaximum"], True
    if out.get("type") == "integer":
        # the API server holds bounds as doubles and wants an integer's to be int64s it can hold:
        # the 64-bit range itself it refuses ("Minimum boundary value must be of type integer"),
        # and with it every value; it goes without saying for format int64, as in core/v1
        # (tolerationSeconds carries no bounds there)
        for bound, limit in (("minimum", -(2**63)), ("maximum", 2**63 - 1)):
            if out.get(bound) == limit:
                del out[bound]
                out["format"] = "int64"
        if any(abs(out.get(b, 0)) > 2**53 for b in ("minimum", "maximum")):
            raise ValueError(f"an integer bound beyond 2^53 is not exact as a double: {node}")
    if abs(out.get("maximum", 0)) >= 2**63:
        # the API server reads a bound this large as a 64-bit integer (1e30 overflows to -2^63
        # and refuses every value): a CEL rule on the double says it instead
        bound, below = out.pop("maximum"), "<" if out.pop("exclusiveMaximum", False) else "<="
        out.setdefault("x-kubernetes-validations", []).append(
            {"rule": f"self {below} {bound!r}", "message": f"must be at most {bound:g}"}
        )
    if "properties" in node:
        out["type"] = "object"
        out["properties"] = {k: _structural(v, defs) for k, v in node["properties"].items()}
        if node.get("required"):
            out["required"] = sorted(node["required"])
    elif node.get("type") == "object":
        extra = node.get("additionalProperties", True)
        keys = dict(node.get("propertyNames") or {})
        if "patternProperties" in node:  # a map whose keys have a pattern (label keys)
            ((keys["pattern"], extra),) = node["patternProperties"].items()
        if keys:
            out.setdefault("x-kubernetes-validations", []).append(_key_rule(keys))
        if extra is True or node.get("x-kubernetes-preserve-unknown-fields"):
            out["x-kubernetes-preserve-unknown-fields"] = True
        else:
            out["additionalProperties"] = _structural(extra, defs)
    if node.get("type") == "array":
        out["items"] = _structural(node["items"], defs)
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            out[key] = [*out.get(key, []), *value] if key == "x-kubernetes-validations" else value
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise ValueError(f"schema node without a type: {node}")
    return out


def _key_rule(keys: dict[str, Any]) -> dict[str, str]:
    """A CEL rule on a map's keys (OpenAPI's structural subset has no propertyNames)."""
    checks = []
    if "minLength" in keys:
        checks.append(f"size(k) >= {keys['minLength']}")
    if "maxLength" in keys:
        checks.append(f"size(k) <= {keys['maxLength']}")
    if "pattern" in keys:
        escaped = keys["pattern"].replace("\\", "\\\\").replace("'", "\\'")
        checks.append(f"k.matches('{escaped}')")
    rule = f"self.all(k, {' && '.join(checks)})"
    said = api.PATTERN_RULES.get(keys.get("pattern", ""), "must be a valid key")
    return {"rule": rule, "message": f"every key {said}"}


def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, schema_generator=_DefaultsSchema)
    return _structural(schema, schema.get("$defs", {}))


def openapi_schema() -> dict[str, Any]:
    """The openAPIV3Schema of ScalingSweep: spec and status from the API models."""
    return {
        "type": "object",
        "description": "A scaling-law sweep: isoFLOP trials of a DiT ladder and the fitted laws.",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _schema_of(api.ScalingSweepSpec),
            "status": _schema_of(api.ScalingSweepStatus),
        },
        "required": ["spec"],
        # Names become label values and prefixes of Job names: the server refuses what
        # ObjectMeta refuses, so no stored sweep is one the operator cannot name.
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.size() <= {api.NAME_MAX_LENGTH}"
                f" && self.metadata.name.matches('{api.DNS_LABEL_PATTERN}')",
                "message": f"metadata.name {api.NAME_RULE}",
            }
        ],
    }


def crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/name": "isoflop", "app.kubernetes.io/part-of": "isoflop"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["isoflop"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {
                            "name": "Trials",
                            "type": "string",
                            "jsonPath": ".status.progress",
                            "description": "Trials done / total",
                        },
                        {
                            "name": "Running",
                            "type": "integer",
                            "jsonPath": ".status.counts.running",
                            "description": "Trials training now",
                        },
                        {
                            "name": "Queued",
                            "type": "integer",
                            "jsonPath": ".status.counts.queued",
                            "description": "Trials waiting in the cluster's queue (Kueue)",
                        },
                        {
                            "name": "Model-Exp",
                            "type": "number",
                            "jsonPath": ".status.fit.laws.params.exponent",
                            "description": "Fitted exponent of N*(C)",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


HEADER = "# Generated by `isoflop crd` from isoflop.api. Do not edit; a test fails on drift.\n"


def render() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100)


def write(path: Path = CRD_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    return path
