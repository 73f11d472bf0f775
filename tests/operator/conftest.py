"""kopf + the real kubernetes client against the kmock API emulator on 127.0.0.1.

Emulator facts (shared/DESIGN.md): it assigns no uid/resourceVersion, ignores label selectors, has
no controllers (the tests play the Job controller), and replays stored objects as ADDED at every
watch start, so objects are created only once kopf's watch is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import pytest

from tests.operator.emulator import SWEEPS, Emulator, load_operator, operator_thread, prepare


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": Emulator}  # dry runs store nothing


@pytest.fixture
def k8s(kmock: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    prepare(kmock, tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("ISOFLOP_RECONCILE_SECONDS", "0.2")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # what the operator's startup sets for its MLflow client (isoflop.tracking.auth), undone after
    for name in ("MLFLOW_TRACKING_AUTH", "MLFLOW_ALLOW_HTTP_REDIRECTS"):
        monkeypatch.setenv(name, "")
    return kmock


async def wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


@contextlib.asynccontextmanager
async def running_operator(k8s: Any) -> AsyncIterator[None]:
    """The operator in this process, in a thread and event loop of its own (operator_thread), once
    its watch of sweeps is open."""
    sweeps = kmock.resource(SWEEPS)
    async with operator_thread(load_operator("isoflop_operator_under_test")):
        await wait_for(
            lambda: any(r.action == kmock.action.WATCH and r.resource == sweeps for r in k8s)
        )
        yield


@contextlib.asynccontextmanager
async def operator_process(k8s: Any, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """The operator as its own process (`kopf run`, as the chart runs it), ended by SIGKILL once
    the test is done with it: a stop that nothing can delay, however loaded the machine (a
    graceful stop in a thread waited up to 60 s for kopf's handlers, and under load sometimes in
    vain: "The operator didn't stop, still running"). Tests that kill the operator while it works
    run against the real API server (tests/e2e), where a kill does what it does in a cluster."""
    sweeps = kmock.resource(SWEEPS)

    def watches() -> int:
        return sum(r.action == kmock.action.WATCH and r.resource == sweeps for r in k8s)

    before = watches()
    with open(log, "ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces",
            "--module=isoflop.cluster.handlers", stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        await wait_for(lambda: watches() > before or proc.returncode is not None, timeout=90)
        assert proc.returncode is None, log.read_text()[-3000:]
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
