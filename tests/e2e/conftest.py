"""The real control plane, started once per test session and stopped at its end."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import ROOT, Cluster, binaries_missing

HELM = ROOT / ".tools" / "bin" / "helm"
NAMESPACE = "isoflop-system"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = binaries_missing()
    if missing:  # `make test` builds them first; a plain pytest run says how
        pytest.fail(
            f"the control plane is not built ({', '.join(missing)} missing): run make cluster",
            pytrace=False,
        )
    c = Cluster(Path(tmp_path_factory.mktemp("cluster")))
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def installed(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`helm install` of the chart; yields a kubeconfig with the operator ServiceAccount's token."""
    out = subprocess.run(
        [str(HELM), "install", "isoflop", str(ROOT / "helm" / "isoflop"), "--namespace",
         NAMESPACE, "--create-namespace", "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/scalingsweeps.isoflop.dev", "--timeout=60s"
    )
    # Nothing serves the chart's webhook Service here (kwok pods run no process): with it
    # registered, every sweep would be refused. test_admission registers the chart's own
    # configuration again, at the address of an operator it runs on 127.0.0.1.
    cluster.kubectl(
        "delete", "validatingwebhookconfigurations", "-l", "app.kubernetes.io/instance=isoflop"
    )
    accounts = json.loads(
        cluster.kubectl(
            "get", "serviceaccounts", "-n", NAMESPACE, "-l",
            "app.kubernetes.io/name=isoflop-operator", "-o", "json",
        ).stdout
    )["items"]  # fmt: skip
    assert len(accounts) == 1
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    cluster.service_account_kubeconfig(NAMESPACE, accounts[0]["metadata"]["name"], path)
    cluster.add_gpu_node("gpu-0")
    cluster.add_gpu_node("gpu-1")
    return path
