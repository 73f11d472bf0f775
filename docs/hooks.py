"""MkDocs hooks: the reference pages, generated at build time from the code itself (never copied).

reference/manifest.md   every spec field, from the CRD schema (isoflop.api.reference)
reference/cli.md        every command and option, from the parsers (isoflop.cli.reference)
reference/metrics.md    the trainer's and the operator's metrics, and the chart's alerts
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from mkdocs.structure.files import File, Files
from prometheus_client.metrics import MetricWrapperBase

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "helm" / "isoflop" / "rules" / "isoflop.rules.yaml"


def metrics_markdown() -> str:
    from isoflop.cluster import metrics
    from isoflop_trainer.components.telemetry import GAUGES, LABELS

    out = [
        "# Metrics and alerts reference",
        "",
        "Generated from the trainer's telemetry, the operator's metrics and the chart's rules "
        "file.",
        "",
        "## The trainer's metrics",
        "",
        f"Served by rank 0 of every trial on its `metrics` port, gauges labelled "
        f"{', '.join(f'`{label}`' for label in LABELS)} (and `namespace` by the scrape). A series "
        "appears when first set: a metric a trial never measures is absent, never 0.",
        "",
        "| metric | what it is |",
        "|---|---|",
        *(f"| `isoflop_{name}` | {doc} |" for name, doc in GAUGES.items()),
        "",
        "## The operator's metrics",
        "",
        "Served on `ISOFLOP_METRICS_PORT` (the chart's ServiceMonitor scrapes them).",
        "",
        "| metric | type | labels | what it is |",
        "|---|---|---|---|",
    ]
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            kind = type(value).__name__.lower()
            name = value._name + ("_total" if kind == "counter" else "")
            labels = ", ".join(f"`{label}`" for label in value._labelnames)
            out.append(f"| `{name}` | {kind} | {labels} | {value._documentation} |")
    out += ["", "## Alerts", "", f"From `{RULES.relative_to(ROOT)}` (the chart's PrometheusRule).",
            ""]  # fmt: skip
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            notes = rule.get("annotations", {})
            out += [
                f"### {rule['alert']}",
                "",
                f"Severity **{rule.get('labels', {}).get('severity', '-')}**"
                + (f", after {rule['for']}" if rule.get("for") else "")
                + f". {notes.get('summary', '')}",
                "",
                notes.get("description", ""),
                "",
                "```promql",
                str(rule["expr"]).strip(),
                "```",
                "",
            ]
    return "\n".join(out)


def pages() -> dict[str, str]:
    from isoflop.api import reference as manifest
    from isoflop.cli import reference as cli

    return {
        "reference/manifest.md": manifest.markdown(),
        "reference/cli.md": cli.markdown(),
        "reference/metrics.md": metrics_markdown(),
    }


def on_files(files: Files, config: Any, **_: Any) -> Files:
    for path, content in pages().items():
        files.append(File.generated(config, path, content=content))
    return files
