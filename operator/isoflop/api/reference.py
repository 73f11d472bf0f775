"""The manifest reference: every field of a ScalingSweep's spec as the API server knows it.

Generated from the CRD's schema (itself generated from the pydantic models), so it can never
disagree with what `kubectl apply` accepts: one section per object, one row per field with its
type, default, bounds and description. The docs site renders it (docs/hooks.py); a test fails
when a field has no description.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from isoflop import api
from isoflop.api import crd


@dataclass(frozen=True)
class FieldDoc:
    path: str  # spec.training.learningRate; [] marks the items of a list
    name: str
    type: str
    default: str
    bounds: str
    description: str


def spec_schema() -> dict[str, Any]:
    """The openAPIV3Schema of the served version's spec."""
    version = crd.crd()["spec"]["versions"][0]
    spec: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec


def objects(schema: dict[str, Any] | None = None) -> dict[str, list[FieldDoc]]:
    """Each object of the spec (by path, in the order a manifest reads) and its fields."""
    out: dict[str, list[FieldDoc]] = {}

    def walk(node: dict[str, Any], path: str) -> None:
        rows = out.setdefault(path, [])
        for name, prop in node.get("properties", {}).items():
            rows.append(_field(f"{path}.{name}", name, prop))
            if "properties" in prop:
                walk(prop, f"{path}.{name}")
            items = prop.get("items", {})
            if "properties" in items:
                walk(items, f"{path}.{name}[]")

    walk(schema if schema is not None else spec_schema(), "spec")
    return out


def _field(path: str, name: str, prop: dict[str, Any]) -> FieldDoc:
    return FieldDoc(
        path=path,
        name=name,
        type=_type(prop),
        default="" if "default" in prop and prop["default"] == {} else _value(prop.get("default")),
        bounds=_bounds(prop),
        description=" ".join(str(prop.get("description", "")).split()),
    )


def _type(prop: dict[str, Any]) -> str:
    kind = str(prop.get("type", "any"))
    if "enum" in prop:
        return ", ".join(f"`{v}`" for v in prop["enum"])
    if kind == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if kind == "object" and "additionalProperties" in prop:
        return f"map of {_type(prop['additionalProperties'])}"
    if kind == "object":
        return "object"
    return kind


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


SIZES = {
    "minItems": "at least {} items",
    "maxItems": "at most {} items",
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "maxProperties": "at most {} entries",
}


def _bounds(prop: dict[str, Any]) -> str:
    parts = []
    if "minimum" in prop:
        parts.append(f"{'>' if prop.get('exclusiveMinimum') else '>='} {prop['minimum']:g}")
    if "maximum" in prop:
        parts.append(f"{'<' if prop.get('exclusiveMaximum') else '<='} {prop['maximum']:g}")
    for key, said in SIZES.items():
        if key in prop:
            parts.append(said.format(prop[key]))
    if "pattern" in prop:
        rule = api.PATTERN_RULES.get(prop["pattern"])
        parts.append(rule if rule is not None else f"matches `{prop['pattern']}`")
    return ", ".join(parts)


def undocumented(schema: dict[str, Any] | None = None) -> list[str]:
    """The fields of the spec with no description."""
    return [f.path for rows in objects(schema).values() for f in rows if not f.description]


def markdown() -> str:
    out = [
        "# Manifest reference",
        "",
        "Every field of a `ScalingSweep`'s `spec` (`apiVersion: isoflop.dev/v1alpha1`), generated "
        "from the CRD the API server validates with. A field left out takes its default; a "
        "bound the server checks is listed beside it.",
        "",
    ]
    for path, rows in objects().items():
        if not rows:
            continue
        out += [f"## `{path}`", "", "| field | type | default | bounds | description |",
                "|---|---|---|---|---|"]  # fmt: skip
        for f in rows:
            cells = [f"`{f.name}`", f.type, f.default, f.bounds, f.description]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out)
