"""The real helm binary and a real Prometheus server on 127.0.0.1 (`make tools` installs both)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "isoflop"
RULES = CHART / "rules" / "isoflop.rules.yaml"
DASHBOARD = CHART / "dashboards" / "isoflop.json"


def tool(name: str) -> str:
    local = ROOT / ".tools" / "bin" / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make tools` (scripts/install-tools.sh)")
    return found


@pytest.fixture(scope="session")
def helm() -> str:
    return tool("helm")


@pytest.fixture(scope="session")
def promtool() -> str:
    return tool("promtool")


class Prometheus:
    """A Prometheus server started for a test: query helpers over its HTTP API."""

    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.process, self.log = url, process, log

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as err:  # 400 on a bad query: the body says why
            body = json.load(err)
        return body

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query, now or at a past time (before a scraped target went away)."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        body = self.api("query", **params)
        assert body["status"] == "success", f"{expr}: {body.get('error')}"
        return list(body["data"]["result"])

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        body = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step="1")
        assert body["status"] == "success", f"{expr}: {body.get('error')}"
        return list(body["data"]["result"])

    def wait_for(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"Prometheus has no data for {expr} after {timeout:.0f} s")


def start_prometheus(
    workdir: Path,
    port: int,
    scrape_configs: list[dict[str, Any]],
    rule_files: list[Path],
    host: str = "127.0.0.1",
) -> Prometheus:
    """`host`: the address it listens on (the real node's pods reach the tests' side of its veth,
    tests/e2e/node.py)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": scrape_configs,
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = workdir / "prometheus.log"
    process = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={host}:{port}",
            "--storage.tsdb.retention.time=1d",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    prom = Prometheus(f"http://{host}:{port}", process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-2000:]
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return prom
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"Prometheus did not become ready: {log.read_text()[-2000:]}")


@pytest.fixture
def prometheus_server() -> Iterator[list[Prometheus]]:
    """Prometheus servers a test starts (start_prometheus); stopped when it ends."""
    started: list[Prometheus] = []
    yield started
    for prom in started:
        prom.process.terminate()
        try:
            prom.process.wait(10)
        except subprocess.TimeoutExpired:
            prom.process.kill()
