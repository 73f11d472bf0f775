"""The generated CRD: no drift from the API, structural, accepting and rejecting as the API does."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from isoflop import api
from isoflop.api import crd

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """Kubernetes' OpenAPI v3 subset -> draft-4 JSON Schema, closed objects as `--strict` would."""
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
    if "properties" in node:
        out["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
        out["additionalProperties"] = False
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(node["additionalProperties"])
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    return out


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft4Validator:
    schema = to_json_schema(crd.openapi_schema())
    schema["properties"]["metadata"]["additionalProperties"] = True
    return jsonschema.Draft4Validator(schema)


def test_committed_crd_matches_the_api() -> None:
    committed = (ROOT / "crds" / "scalingsweep.yaml").read_text()
    assert committed == crd.render(), "crds/scalingsweep.yaml drifted: run `isoflop crd`"


def test_crd_is_a_valid_kubernetes_object() -> None:
    obj = yaml.safe_load(crd.render())
    for version in ("1.27", "1.33"):
        kubernetes_validate.validate(obj, version, strict=True)


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, node)]
    for k, v in node.get("properties", {}).items():
        nodes += walk(v, f"{path}.{k}")
    if isinstance(node.get("items"), dict):
        nodes += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        nodes += walk(node["additionalProperties"], f"{path}{{}}")
    return nodes


def test_schema_is_structural() -> None:
    for path, node in walk(crd.openapi_schema()):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        for banned in ("$ref", "anyOf", "oneOf", "allOf", "const", "title", "$defs"):
            assert banned not in node, f"{path} has {banned}"
        assert not ("properties" in node and "additionalProperties" in node), path
        if "default" in node:  # the API server requires defaults to validate
            jsonschema.Draft4Validator(to_json_schema(node)).validate(node["default"])


def test_crd_names_columns_and_rules() -> None:
    obj = crd.crd()
    spec = obj["spec"]
    assert obj["metadata"]["name"] == "scalingsweeps.isoflop.dev"
    assert spec["names"]["shortNames"] == ["sweep", "sweeps"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Trials": ".status.progress",
        "Running": ".status.counts.running",
        "Queued": ".status.counts.queued",  # waiting in Kueue: not running
        "Model-Exp": ".status.fit.laws.params.exponent",
        "Age": ".metadata.creationTimestamp",
    }
    props = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    immutable = {"rule": "self == oldSelf", "message": "is immutable"}
    assert immutable in props["model"]["properties"]["family"]["x-kubernetes-validations"]
    assert immutable in props["data"]["x-kubernetes-validations"]
    assert immutable in props["flopsAccounting"]["x-kubernetes-validations"]
    assert props["budgets"]["items"] == {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        # a maximum past 2^63 is read as an overflowing int64 by the server: a CEL rule instead
        "x-kubernetes-validations": [{"rule": "self <= 1e+30", "message": "must be at most 1e+30"}],
    }
    assert props["model"]["properties"]["family"]["enum"] == [
        "in-context",
        "cross-attention",
        "diffusers",
        "custom",
    ]
    assert props["training"]["default"] == {}
    assert props["data"]["properties"]["latentShape"]["default"] == [4, 32, 32]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_crd_schema(
    path: Path, validator: jsonschema.Draft4Validator
) -> None:
    validator.validate(api.yaml_load(path.read_text()))


@pytest.mark.parametrize(
    ("spec_path", "value"),
    [
        ("model.family", "unet"),
        ("model.depths", [0]),
        ("model.typo", 1),
        ("budgets", [-1.0]),
        ("budgets", []),
        ("flopsAccounting", "7ND"),
        ("data.source", "ftp://x"),
        ("data.latentShape", [4, 32]),
        ("training.globalBatchSize", 0),
        ("resources.cpu", "eight"),
        ("resources.tolerations", [{"effect": "Sometimes"}]),
        ("parallelism", 0),
    ],
)
def test_schema_rejects_what_it_can_express(
    spec_path: str, value: Any, validator: jsonschema.Draft4Validator
) -> None:
    obj = {
        "apiVersion": "isoflop.dev/v1alpha1",
        "kind": "ScalingSweep",
        "metadata": {"name": "s"},
        "spec": {"model": {"depths": [2]}, "budgets": [1e17]},
    }
    validator.validate(obj)
    bad = copy.deepcopy(obj)
    node = bad["spec"]
    *parents, leaf = spec_path.split(".")
    for key in parents:
        node = node[key] if key in node else node.setdefault(key, {})
    node[leaf] = value
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)
    with pytest.raises(api.ManifestError):  # and the API model agrees
        api.parse_sweep(bad)
