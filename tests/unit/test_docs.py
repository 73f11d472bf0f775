"""The documentation's generated reference: complete, described, and true to the code."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from isoflop.api import reference as manifest
from isoflop.cli import reference as cli

ROOT = Path(__file__).resolve().parents[2]


def test_every_manifest_field_has_a_description() -> None:
    assert manifest.undocumented() == []


def test_a_field_without_a_description_is_caught() -> None:
    schema = {
        "type": "object",
        "properties": {
            "said": {"type": "integer", "description": "A field."},
            "inner": {
                "type": "object",
                "description": "An object.",
                "properties": {"bare": {"type": "string"}},
            },
            "rows": {
                "type": "array",
                "description": "A list.",
                "items": {"type": "object", "properties": {"also": {"type": "number"}}},
            },
        },
    }
    assert manifest.undocumented(schema) == ["spec.inner.bare", "spec.rows[].also"]


def test_the_manifest_reference_lists_every_field_with_its_default_and_bounds() -> None:
    text = manifest.markdown()
    rows = {
        line.split("|")[1].strip(" `"): line for line in text.splitlines() if line.startswith("| `")
    }
    objects = manifest.objects()
    assert sum(len(fields) for fields in objects.values()) == len(
        [line for line in text.splitlines() if line.startswith("| `")]
    )
    assert "## `spec.training`" in text
    assert "## `spec.resources.tolerations[]`" in text  # items of a list have their section
    training = text.split("## `spec.training`\n")[1].split("## ")[0]
    lr = next(line for line in training.splitlines() if line.startswith("| `learningRate`"))
    assert "| number | `0.0001` | > 0, <= 1 |" in lr
    assert "flopsAccounting" in rows
    assert "`exact`, `6ND`" in rows["flopsAccounting"]
    # a pattern with a rule in words is said in words; one without is shown with its
    # alternatives escaped, or the table would split there
    quantity = next(line for line in text.splitlines() if line.startswith("| `cpu`"))
    assert "must be a Kubernetes quantity such as 500m, 4 or 16Gi" in quantity
    lookback = next(line for line in text.splitlines() if line.startswith("| `lookback`"))
    assert "matches `^[1-9][0-9]{0,5}[smhd]$`" in lookback
    checkpoints = next(line for line in text.splitlines() if line.startswith("| `checkpoints`"))
    assert "must be s3://BUCKET/PREFIX, with a bucket name S3 allows" in checkpoints
    features = next(line for line in text.splitlines() if line.startswith("| `features`"))
    assert "(inception\\|" in features
    assert len(re.split(r"(?<!\\)\|", features)) == 7  # 5 cells between 6 bars


def test_every_command_option_has_help() -> None:
    assert cli.undocumented() == []


def test_an_option_without_help_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    root = argparse.ArgumentParser(prog="tool")
    sub = root.add_subparsers()
    p = sub.add_parser("go", help="do it")
    p.add_argument("--said", help="an option")
    p.add_argument("--bare")
    p.add_argument("target")
    monkeypatch.setattr(cli, "programs", lambda: {"tool": root})
    assert cli.undocumented() == ["tool go --bare", "tool go target"]


def test_the_cli_reference_has_every_command_and_option() -> None:
    text = cli.markdown()
    for program, root in cli.programs().items():
        for name, command in cli.commands(root):
            assert f"### `{program} {name}`" in text
            for action in cli.options(command):
                flag = ", ".join(action.option_strings) or action.dest.upper()
                assert f"| `{flag}` |" in text, (program, name, flag)
    fit = text.split("### `isoflop fit`")[1].split("###")[0]
    assert "| `--bootstrap` | `1000` | resamples for intervals (0: none) |" in fit


def test_the_metrics_reference_names_every_alert_and_metric() -> None:
    import importlib.util

    import yaml

    spec = importlib.util.spec_from_file_location("hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None
    assert spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)  # the site's hooks, as `make docs` runs them
    text = hooks.metrics_markdown()
    rules = yaml.safe_load((ROOT / "helm/isoflop/rules/isoflop.rules.yaml").read_text())
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert alerts
    for alert in alerts:
        assert f"### {alert}" in text
    for name in ("isoflop_eval_loss", "isoflop_mfu", "isoflop_operator_trials",
                 "isoflop_operator_reconcile_errors_total"):  # fmt: skip
        assert f"| `{name}` |" in text


def test_every_page_is_in_the_navigation() -> None:
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav: object) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, list):
            return [p for item in nav for p in pages(item)]
        if isinstance(nav, dict):
            return [p for value in nav.values() for p in pages(value)]
        return []

    listed = set(pages(config["nav"]))
    written = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    generated = {"reference/manifest.md", "reference/cli.md", "reference/metrics.md"}
    assert listed == written | generated
