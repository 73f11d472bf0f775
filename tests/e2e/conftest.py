"""The real control plane, started once per test session and stopped at its end."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.cluster import NODE_HOST_IP, ROOT, Cluster, binaries_missing

if TYPE_CHECKING:
    from tests.e2e.node import Node

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


# ------------------------------------------------------------------------------------------------
# a real node: kubelet, containerd and the images built from our Dockerfiles (tests/e2e/node.py)

PODS_NAMESPACE = "isoflop-pods"  # where the operator runs as the chart's Deployment
TRIALS_NAMESPACE = "trials"  # the only namespace it watches; restricted Pod Security enforced


@pytest.fixture(scope="session")
def images() -> dict[str, tuple[str, Path]]:
    """The images (name -> reference, OCI archive), built by scripts/build-images.sh or reused."""
    from tests.e2e.node import images_built

    return images_built()


@pytest.fixture(scope="session")
def node(
    cluster: Cluster, images: dict[str, tuple[str, Path]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    from tests.e2e.node import Node, missing

    lacking = missing()
    if lacking:  # `make test` installs and builds them first; a plain pytest run says how
        pytest.fail(f"a real node needs {', '.join(lacking)}", pytrace=False)
    ordered = [images["pause"], *(v for k, v in images.items() if k not in ("pause", "base"))]
    n = Node(Path(tmp_path_factory.mktemp("node")))
    try:
        n.start(cluster, dict(ordered))
        print(f"\nreal node: {', '.join(f'{k} {v:.0f} s' for k, v in n.seconds.items())}")
        yield n
    finally:
        n.stop()


@pytest.fixture(scope="session")
def deployed(cluster: Cluster, node: Node, images: dict[str, tuple[str, Path]]) -> dict[str, str]:
    """`helm install` with the operator image, running as the chart's Deployment on the real node
    and serving its webhook through the chart's Service; it watches TRIALS_NAMESPACE alone, so
    the kwok tests' operators and sweeps never meet it. Returns the release's names."""
    repository, tag = images["operator"][0].rsplit(":", 1)
    cluster.kubectl("create", "namespace", TRIALS_NAMESPACE, check=False)
    cluster.kubectl(
        "label", "namespace", TRIALS_NAMESPACE, "--overwrite",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )  # fmt: skip
    out = subprocess.run(
        [str(HELM), "upgrade", "--install", "isoflop-pods", str(ROOT / "helm" / "isoflop"),
         "--namespace", PODS_NAMESPACE, "--create-namespace",
         "--kubeconfig", str(cluster.kubeconfig),
         "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
         "--set", "image.pullPolicy=Never",
         "--set", f"watch.namespaces={{{TRIALS_NAMESPACE}}}",
         "--set", "operator.reconcileSeconds=1",
         # sweeps may read results from a Prometheus the tests start where pods reach them
         "--set", f"policy.prometheusUrls={{http://{NODE_HOST_IP}:*}}",
         # and log to an MLflow server the tests start there (tests/e2e/test_pods.py)
         "--set", f"policy.mlflowTrackingUris={{http://{NODE_HOST_IP}:*}}",
         "--set", "nodeSelector.kubernetes\\.io/hostname=isoflop-node",
         "--wait", "--timeout=300s"],
        capture_output=True, text=True, timeout=360, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        pods = cluster.kubectl("describe", "pods", "-n", PODS_NAMESPACE, check=False).stdout
        raise AssertionError(f"helm install: {out.stderr}\n{pods[-4000:]}")
    return {"namespace": PODS_NAMESPACE, "release": "isoflop-pods", "trials": TRIALS_NAMESPACE}
