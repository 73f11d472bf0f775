"""The kmock emulator as a Kubernetes for the operator: resources, kubeconfig, a Job controller.

Shared by the operator tests and benchmarks/bench_operator.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import kopf

import isoflop.cluster.handlers

SWEEPS = "isoflop.dev/v1alpha1/scalingsweeps"
SWEEPS_URL = "/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps"
WORKLOADS = "kueue.x-k8s.io/v1beta2/workloads"


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator, with dry runs (isoflop.cluster.dryrun) answered as the API server
    answers one it takes: the object back, nothing stored (kmock stores every create)."""

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        if request.action == kmock.action.CREATE and request.params.get("dryRun") == "All":
            return aiohttp.web.json_response(request.data)
        return await super()._handle(request)


def prepare(k8s: Any, kubeconfig: Path) -> None:
    """Discovery for kopf (core resources and the CRD) and a kubeconfig pointing at the emulator."""
    k8s.resources.load_bundled()
    k8s.resources[SWEEPS] = kmock.ResourceInfo(
        kind="ScalingSweep",
        singular="scalingsweep",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
        subresources={"status"},
    )
    k8s.resources[WORKLOADS] = kmock.ResourceInfo(  # Kueue's, read by cluster/queue.py
        kind="Workload",
        singular="workload",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
        subresources={"status"},
    )
    kubeconfig.write_text(f"""
apiVersion: v1
kind: Config
clusters: [{{name: kmock, cluster: {{server: "{k8s.url}"}}}}]
users: [{{name: kmock, user: {{token: dummy}}}}]
contexts: [{{name: kmock, context: {{cluster: kmock, user: kmock, namespace: default}}}}]
current-context: kmock
""")


def load_operator(name: str) -> kopf.OperatorRegistry:
    """A fresh registry with the login handler and the operator's handlers loaded into it."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_with_kubeconfig)
    kopf.set_default_registry(registry)
    spec = importlib.util.spec_from_file_location(name, isoflop.cluster.handlers.__file__)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while executing it
    spec.loader.exec_module(module)
    return registry


@contextlib.asynccontextmanager
async def operator_thread(
    registry: kopf.OperatorRegistry, timeout: float = 30
) -> AsyncIterator[None]:
    """kopf running `registry` in a thread with an event loop of its own, for as long as the
    block; the emulator serves it from the caller's loop. Not in the caller's loop: kopf, when it
    stops, cancels every task made in its loop since it started (its run_tasks: "the loop is not
    fully ours"), and in the caller's loop those include the emulator's handlers of keep-alive
    connections opened meanwhile; the next request on one of them is read and never answered
    (issue 36). Stopped by cancelling: no 5 s grace period, and the stop flag set first tells
    kopf the stop is meant (no SIGKILL timer)."""
    loop = asyncio.new_event_loop()
    ready, stop = threading.Event(), threading.Event()
    main = loop.create_task(
        kopf.operator(
            registry=registry, clusterwide=True, standalone=True,
            ready_flag=ready, stop_flag=stop,
        )
    )  # fmt: skip
    failure: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(main)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="kopf-operator", daemon=True)
    thread.start()
    try:
        if not await asyncio.to_thread(ready.wait, timeout):
            raise RuntimeError(f"the operator was not ready in {timeout} s: {failure}")
        yield
    finally:
        stop.set()
        with contextlib.suppress(RuntimeError):  # its loop already closed: it had ended
            loop.call_soon_threadsafe(main.cancel)
        await asyncio.to_thread(thread.join, timeout)
        if thread.is_alive():
            raise RuntimeError(f"the operator did not stop in {timeout} s")
    if failure:
        raise failure[0]


async def finish(k8s: Any, name: str, result: dict[str, Any], exit_code: int = 0) -> None:
    """Play the Job controller and the kubelet: the Job completes (or, with a nonzero exit code,
    fails by its podFailurePolicy), its pod left a message."""
    job_status = (
        {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        if exit_code == 0
        else {
            "failed": 1,
            "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}],
        }
    )
    await k8s.patch(
        f"/apis/batch/v1/namespaces/default/jobs/{name}/status", json={"status": job_status}
    )
    await ended_pod(k8s, name, result, exit_code)


async def ended_pod(
    k8s: Any, job: str, result: dict[str, Any], exit_code: int, suffix: str = "x"
) -> None:
    """A pod of the Job that ended with this exit code and termination message."""
    state = {"terminated": {"exitCode": exit_code, "message": json.dumps(result)}}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job}-{suffix}",
            "namespace": "default",
            "labels": {"job-name": job},
        },
        "spec": {"containers": [{"name": "trainer", "image": "t"}]},
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",  # as the kubelet ends it
            "containerStatuses": [
                {
                    "name": "trainer",
                    "image": "t",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": state,
                }
            ],
        },
    }
    await k8s.post("/api/v1/namespaces/default/pods", json=pod)


CONFIGMAPS = kmock.resource("v1/configmaps")


def trial_records(k8s: Any, sweep: str = "qs") -> list[dict[str, Any]]:
    """The per-trial records the operator keeps in the sweep's ConfigMaps (one per budget)."""
    out = []
    for key, obj in list(k8s.objects.items()):
        labels = obj.get("metadata", {}).get("labels") or {}
        if key[0] != CONFIGMAPS or obj.deleted or labels.get("isoflop.dev/sweep") != sweep:
            continue
        out += [json.loads(v) for v in (obj.get("data") or {}).values()]
    return out
