"""kopf + the real kubernetes client against the kmock API emulator on 127.0.0.1.

Emulator facts (shared/DESIGN.md): it assigns no uid/resourceVersion, ignores label selectors, has
no controllers (the tests play the Job controller), and replays stored objects as ADDED at every
watch start, so objects are created only once kopf's watch is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest

import isoflop.operator
from tests.operator.emulator import SWEEPS, load_operator, prepare


@pytest.fixture
def k8s(kmock: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    prepare(kmock, tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("ISOFLOP_RECONCILE_SECONDS", "0.2")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
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
    registry = load_operator("isoflop_operator_under_test")
    ready = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(registry=registry, clusterwide=True, standalone=True, ready_flag=ready)
    )
    try:
        await asyncio.wait_for(ready.wait(), 15)
        sweeps = kmock.resource(SWEEPS)
        await wait_for(
            lambda: any(r.action == kmock.action.WATCH and r.resource == sweeps for r in k8s)
        )
        yield
    finally:
        task.cancel()  # cancelling skips kopf's 5 s grace period for the emulator's tasks
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)


@contextlib.asynccontextmanager
async def threaded_operator(k8s: Any) -> AsyncIterator[None]:
    """The operator in its own thread and loop: stopping it cannot touch the emulator's tasks."""
    from kopf.testing import KopfRunner

    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_with_kubeconfig)
    runner = KopfRunner(
        ["run", "--standalone", "--all-namespaces", isoflop.operator.__file__],
        registry=registry,
        timeout=60,
    )
    runner.__enter__()
    try:
        sweeps = kmock.resource(SWEEPS)
        watches = sum(r.action == kmock.action.WATCH and r.resource == sweeps for r in k8s)
        await wait_for(
            lambda: (
                sum(r.action == kmock.action.WATCH and r.resource == sweeps for r in k8s) > watches
            )
        )
        yield
    finally:
        # joins the thread: off the loop, so the emulator keeps serving while kopf stops
        await asyncio.to_thread(runner.__exit__, None, None, None)
