"""The ScalingSweep API: examples parse; invalid manifests fail in one sentence naming the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from isoflop import api

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

MINIMAL: dict[str, Any] = {
    "apiVersion": "isoflop.dev/v1alpha1",
    "kind": "ScalingSweep",
    "metadata": {"name": "s"},
    "spec": {"model": {"depths": [2, 3]}, "budgets": [1e17]},
}


def with_spec(**changes: Any) -> dict[str, Any]:
    """MINIMAL with spec paths changed: with_spec(**{"model.depths": [1]})."""
    obj = copy.deepcopy(MINIMAL)
    for path, value in changes.items():
        node = obj["spec"]
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return obj


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    sweep = api.load_sweep(path)
    assert sweep.kind == "ScalingSweep"
    assert sweep.spec.budgets == sorted(sweep.spec.budgets)


def test_defaults_fill_a_minimal_manifest() -> None:
    s = api.parse_sweep(MINIMAL).spec
    assert s.model.family == "in-context"
    assert s.model.width_per_depth == 64
    assert s.flops_accounting == "exact"
    assert s.data.source == "procedural://shapes"
    assert s.data.latent_shape == [4, 32, 32]
    assert s.training.global_batch_size == 1024
    assert s.training.betas == [0.9, 0.95]
    assert s.parallelism == 4
    assert s.fit.bootstrap == 1000


def test_wire_format_is_camel_case_and_round_trips() -> None:
    sweep = api.load_sweep(EXAMPLES / "paper-in-context.yaml")
    wire = sweep.to_wire()
    assert wire["spec"]["model"]["widthPerDepth"] == 64
    assert wire["spec"]["flopsAccounting"] == "6ND"
    assert wire["spec"]["resources"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert api.parse_sweep(wire) == sweep


def test_yaml_reads_exponent_floats_like_kubernetes() -> None:
    assert api.yaml_load("a: 1e17\nb: 1.5e21\nc: 3\nd: '1e17'") == {
        "a": 1e17,
        "b": 1.5e21,
        "c": 3,
        "d": "1e17",
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model.dephts": [1]}, "spec.model.dephts: is not a known field"),
        (
            {"model.family": "unet"},
            "spec.model.family: Input should be 'in-context', 'cross-attention', 'diffusers' or "
            "'custom'",
        ),
        (
            {"model.depths": [2, 0]},
            "spec.model.depths[1]: Input should be greater than or equal to 1",
        ),
        ({"model.depths": [2, 2]}, "spec.model.depths: depths must not repeat"),
        ({"model.depths": []}, "spec.model: give exactly one of depths or configs"),
        (
            {"model.headDim": 48},
            "spec.model: depth 2 gives width 128 (widthPerDepth x depth), "
            "not a multiple of headDim 48",
        ),
        (
            {"model.configs": [{"name": "a", "depth": 2, "width": 128}]},
            "spec.model: give exactly one of depths or configs",
        ),
        ({"budgets": [1e17, -1]}, "spec.budgets[1]: Input should be greater than 0"),
        ({"budgets": [1e17, 1e17]}, "spec.budgets: must not repeat a value"),
        ({"budgets": []}, "spec.budgets: List should have at least 1 item"),
        (
            {"data.source": "http://x"},
            "spec.data.source: must be procedural://NAME, file:///PATH or s3://BUCKET/PREFIX",
        ),
        ({"data.latentShape": [4, 32]}, "spec.data.latentShape: List should have at least 3 items"),
        (
            {"data.latentShape": [4, 31, 32]},
            "spec.data.latentShape 31x32 is not divisible by spec.model.patchSize 2",
        ),
        ({"flopsAccounting": "7ND"}, "spec.flopsAccounting: Input should be 'exact' or '6ND'"),
        ({"training.betas": [0.9, 1.5]}, "spec.training.betas: betas must lie in [0, 1)"),
        ({"training.precision": "int8"}, "spec.training.precision: Input should be"),
        (
            {"resources.memory": "lots"},
            "spec.resources.memory: must be a Kubernetes quantity such as 500m, 4 or 16Gi, not",
        ),
        (
            {"resources.tolerations": [{"operator": "Maybe"}]},
            "spec.resources.tolerations[0].operator",
        ),
        ({"parallelism": 0}, "spec.parallelism: Input should be greater than or equal to 1"),
        (
            {"metrics.prometheusUrl": "prometheus:9090"},
            "spec.metrics.prometheusUrl: must be an http:// or https:// URL with a host",
        ),
        ({"fit.holdOutBudget": 3e17}, "spec.fit.holdOutBudget 3e+17 is not one of budgets"),
    ],
)
def test_invalid_spec_names_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(api.ManifestError) as exc:
        api.parse_sweep(with_spec(**changes))
    text = str(exc.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_missing_spec_fields_and_wrong_kind() -> None:
    obj = copy.deepcopy(MINIMAL)
    del obj["spec"]["budgets"]
    with pytest.raises(api.ManifestError, match=r"^spec\.budgets: is required$"):
        api.parse_sweep(obj)
    with pytest.raises(
        api.ManifestError, match=r"expected apiVersion isoflop\.dev/v1alpha1 and kind ScalingSweep"
    ):
        api.parse_sweep({**MINIMAL, "kind": "Job"})
    with pytest.raises(api.ManifestError, match=r"^metadata\.name: must be a DNS label"):
        api.parse_sweep({**MINIMAL, "metadata": {"name": "Bad_Name"}})


def test_every_problem_is_named_in_one_sentence_with_a_did_you_mean() -> None:
    with pytest.raises(api.ManifestError) as err:
        api.parse_sweep(with_spec(parallelism=0, **{"model.family": "x"}))
    said = str(err.value)
    assert "\n" not in said
    assert said.count("; ") == 1
    assert "spec.parallelism: " in said
    assert "spec.model.family: " in said
    typo = dict(MINIMAL["spec"])
    typo["budget"] = typo.pop("budgets")
    typo["training"] = {"learningrate": 0.1}
    with pytest.raises(api.ManifestError) as err:
        api.parse_sweep({**MINIMAL, "spec": typo})
    assert str(err.value) == (
        "spec.budgets: is required; spec.training.learningrate: is not a known field (did you "
        "mean learningRate?); spec.budget: is not a known field (did you mean budgets?)"
    )
    many = {**MINIMAL["spec"], **{f"extra{i}": 1 for i in range(7)}}
    with pytest.raises(api.ManifestError, match=r"; spec\.extra4: is not a known field \(and 2 "
                       r"more problems\)$"):  # fmt: skip
        api.parse_sweep({**MINIMAL, "spec": many})


def test_parse_spec_prefixes_paths() -> None:
    with pytest.raises(api.ManifestError, match=r"^spec\.parallelism: "):
        api.parse_spec({**MINIMAL["spec"], "parallelism": -1})
    assert api.parse_spec(MINIMAL["spec"]).budgets == [1e17]
    # a rule across fields has no path of its own below the spec (the operator's admission
    # parses the spec alone): the sentence still names it
    with pytest.raises(api.ManifestError, match=r"^spec.fit.holdOutBudget 5e\+17 is not one"):
        api.parse_spec({**MINIMAL["spec"], "fit": {"holdOutBudget": 5e17}})


def test_load_errors_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(api.ManifestError, match=r"^cannot read .*missing\.yaml: No such file"):
        api.load_sweep(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    with pytest.raises(
        api.ManifestError, match=r"is not valid YAML at line 2: expected .,. or .\]."
    ):
        api.load_sweep(bad)
    two = tmp_path / "two.yaml"
    two.write_text(yaml.safe_dump(MINIMAL) + "---\n" + yaml.safe_dump(MINIMAL))
    with pytest.raises(api.ManifestError, match="must hold exactly one ScalingSweep, found 2"):
        api.load_sweep(two)


def test_a_large_status_stays_far_under_the_etcd_limit() -> None:
    trials = [
        api.TrialRecord(
            id=f"1p5e21-d{i:02d}",
            phase="Succeeded",
            params=958_300_000 + i,
            tokens=10**12 + i,
            attempts=3,
            loss=0.123456789,
            source="prometheus",
        )
        for i in range(600)
    ]
    status = api.ScalingSweepStatus(phase="Running", trials=trials, progress="600/600")
    size = len(status.model_dump_json(by_alias=True, exclude_none=True))
    assert size < 150 * 1024, size  # etcd's limit is 1.5 MiB
