"""The chart's alerts with the real promtool: the rules file checks, and every alert is unit-tested
both firing and staying quiet."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.monitoring.conftest import ROOT, RULES

TESTS = Path(__file__).with_name("alerts_test.yaml")


def alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_rules(promtool: str) -> None:
    out = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in out.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    out = subprocess.run(
        [promtool, "test", "rules", str(TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=TESTS.parent,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = [
        case
        for test in yaml.safe_load(TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for rule in alerts():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} is never tested firing"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} is never tested quiet"


def test_every_alert_says_what_and_how_bad() -> None:
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names))
    for rule in alerts():
        assert rule["labels"]["severity"] in ("critical", "warning")  # type: ignore[index]
        assert set(rule["annotations"]) >= {"summary", "description"}  # type: ignore[arg-type]
    guide = (ROOT / "docs" / "tasks" / "monitoring.md").read_text()
    missing = [name for name in names if name not in guide]
    assert not missing, f"docs/tasks/monitoring.md does not explain {missing}"


def test_a_broken_rule_fails_the_check(promtool: str, tmp_path: Path) -> None:
    """The check can fail: the same file with one expression broken does."""
    broken = RULES.read_text().replace("absent(up{", "absent(up{{", 1)
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, check=False)
    assert out.returncode != 0
