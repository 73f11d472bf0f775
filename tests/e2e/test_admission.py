"""The admission webhook on the real API server: two users with different rights in one namespace.

The operator runs with the chart's ServiceAccount and serves its webhook on 127.0.0.1 (with the
test CA's serving certificate for that address); the chart's own ValidatingWebhookConfiguration is
registered again with that URL in place of the in-cluster Service. The users are impersonated by
the administrator (`kubectl --as`), so the API server sends their names to the webhook, which asks
the server (SubjectAccessReviews) what each may do.

- alice may create sweeps, create Jobs, use the ServiceAccount `trainer` and get the Secret
  `s3-keys`; bob may create and edit sweeps, nothing else; erin holds Kubernetes' built-in
  `edit` role in the namespace (impersonate, not use, on ServiceAccounts).
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from isoflop.cluster.admission import WEBHOOK_ID
from tests.corpus import write_corpus
from tests.e2e.cluster import Cluster, Operator, free_port
from tests.e2e.conftest import HELM
from tests.e2e.conftest import NAMESPACE as RELEASE_NAMESPACE
from tests.e2e.test_cluster import small_sweep, sweep
from tests.e2e.test_corpus import server_verdicts

NAMESPACE = "team"


def rbac() -> list[dict[str, Any]]:
    def role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "rules": rules,
        }

    def binding(name: str, users: list[str]) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u} for u in users
            ],
        }

    sweeps = [
        {
            "apiGroups": ["isoflop.dev"],
            "resources": ["scalingsweeps"],
            "verbs": ["get", "list", "create", "update", "patch"],
        }
    ]
    runs = [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["serviceaccounts"],
            "verbs": ["use"],
            "resourceNames": ["trainer"],
        },
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get"],
            "resourceNames": ["s3-keys"],
        },
    ]
    return [
        role("sweeps", sweeps),
        binding("sweeps", ["alice", "bob"]),
        role("runs", runs),
        binding("runs", ["alice"]),
        {  # erin edits the namespace: Kubernetes' own "edit" role, nothing of ours
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "erin-edits", "namespace": NAMESPACE},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "edit",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "erin"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "trainer", "namespace": NAMESPACE},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3-keys", "namespace": NAMESPACE},
            "stringData": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"},
        },
    ]


def charts_webhook(cluster: Cluster) -> dict[str, Any]:
    out = subprocess.run(
        [str(HELM), "get", "manifest", "isoflop", "--namespace", RELEASE_NAMESPACE,
         "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    (config,) = [d for d in docs if d["kind"] == "ValidatingWebhookConfiguration"]
    return config  # type: ignore[no-any-return]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def webhook(cluster: Cluster, installed: Path, tmp_path: Path) -> Iterator[Operator]:
    """The operator with its webhook on 127.0.0.1, registered as the chart registers it."""
    port = free_port()
    crt, key = cluster.pki.serving  # the test CA's certificate for 127.0.0.1
    operator = Operator(
        installed,
        tmp_path / "operator.log",
        env={
            "ISOFLOP_WEBHOOK_PORT": str(port),
            "ISOFLOP_WEBHOOK_ADDRESS": "127.0.0.1",
            "ISOFLOP_WEBHOOK_CERT": str(crt),
            "ISOFLOP_WEBHOOK_KEY": str(key),
            "ISOFLOP_ALLOWED_IMAGES": "ghcr.io/isoflop/*",
        },
    )
    config = charts_webhook(cluster)
    for hook in config["webhooks"]:
        path = hook["clientConfig"]["service"]["path"]
        hook["clientConfig"] = {
            "url": f"https://127.0.0.1:{port}{path}",
            "caBundle": base64.b64encode(cluster.pki.ca.read_bytes()).decode(),
        }
    try:
        cluster.kubectl("create", "namespace", NAMESPACE, check=False)
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac()}),
        )
        cluster.wait_for(lambda: listening(port), 60, "the operator's webhook")
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps(config))
        yield operator
    finally:
        cluster.kubectl(
            "delete", "validatingwebhookconfiguration", config["metadata"]["name"], check=False
        )
        # the operator's finalizer goes with its own deletion handler: delete before stopping it
        cluster.kubectl("delete", "scalingsweeps", "--all", "-n", NAMESPACE, check=False)
        operator.stop()


def apply_as(
    cluster: Cluster, user: str, manifest: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "apply", f"--as={user}", "-f", "-", stdin=json.dumps(manifest), check=False
    )


def test_a_sweep_runs_only_what_its_sender_may_run(
    cluster: Cluster, webhook: Operator, tmp_path: Path
) -> None:
    assert (
        charts_webhook(cluster)["webhooks"][0]["clientConfig"]["service"]["path"]
        == f"/{WEBHOOK_ID}"
    )
    manifest = small_sweep("rights", NAMESPACE)
    manifest["spec"]["parallelism"] = 1
    manifest["spec"]["resources"] = {
        "serviceAccountName": "trainer",
        "s3CredentialsSecret": "s3-keys",
        "cpu": "1",
        "memory": "1Gi",
    }

    # bob may create sweeps, but not what this one runs: refused by the server, nothing stored
    out = apply_as(cluster, "bob", manifest)
    assert out.returncode != 0
    assert (
        "bob may not create Jobs, use the ServiceAccount 'trainer' "
        "(spec.resources.serviceAccountName) or get the Secret 's3-keys' "
        "(spec.resources.s3CredentialsSecret) in namespace 'team'"
    ) in out.stderr, out.stderr
    assert sweep(cluster, "rights", NAMESPACE) == {}

    # alice may: stored, and its Job runs as the account she may use
    out = apply_as(cluster, "alice", manifest)
    assert out.returncode == 0, out.stderr + webhook.log.read_text()[-3000:]

    def jobs() -> list[dict[str, Any]]:
        got = cluster.kubectl(
            "get", "jobs", "-n", NAMESPACE, "-l", "isoflop.dev/sweep=rights", "-o", "json"
        )
        return json.loads(got.stdout)["items"]  # type: ignore[no-any-return]

    cluster.wait_for(lambda: bool(jobs()), 60, "alice's first trial Job")
    # a namespace editor needs no grant of ours (dry run: checked by the webhook, not stored)
    edited = small_sweep("edited", NAMESPACE)
    edited["spec"]["resources"] = manifest["spec"]["resources"]
    out = cluster.kubectl(
        "apply", "--as=erin", "--dry-run=server", "-f", "-", stdin=json.dumps(edited), check=False
    )
    assert out.returncode == 0, out.stderr
    pod = jobs()[0]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "trainer"

    # bob cannot ride on alice's rights by editing her sweep's spec...
    patch = json.dumps({"spec": {"training": {"seed": 7}}})
    out = cluster.kubectl(
        "patch",
        "scalingsweep",
        "rights",
        "-n",
        NAMESPACE,
        "--as=bob",
        "--type=merge",
        "-p",
        patch,
        check=False,
    )
    assert out.returncode != 0
    assert "bob may not create Jobs" in out.stderr, out.stderr
    assert sweep(cluster, "rights", NAMESPACE)["spec"]["training"].get("seed") != 7
    # ...but may label it: metadata cannot make it run anything new
    out = cluster.kubectl(
        "label", "scalingsweep", "rights", "-n", NAMESPACE, "--as=bob", "owner=alice", check=False
    )
    assert out.returncode == 0, out.stderr

    # the installation's policy and the operator's own validity are enforced before storing
    foreign = small_sweep("foreign", NAMESPACE)
    foreign["spec"]["resources"] = {"image": "docker.io/evil/miner:1"}
    out = apply_as(cluster, "alice", foreign)
    assert out.returncode != 0
    assert (
        "spec.resources.image 'docker.io/evil/miner:1' is not allowed by this installation"
        in out.stderr
    )
    unplannable = small_sweep("tiny-mlp", NAMESPACE)
    unplannable["spec"]["model"]["mlpRatio"] = 1e-9
    out = apply_as(cluster, "alice", unplannable)
    assert out.returncode != 0
    said = "spec.model: the ladder cannot be built: mlp_ratio 1e-09 gives an empty MLP"
    assert said in out.stderr, out.stderr
    assert sweep(cluster, "tiny-mlp", NAMESPACE) == {}

    # the operator's own writes (status, kopf's annotations) still go through: alice's sweep has
    # a status, and the operator kept running
    assert sweep(cluster, "rights", NAMESPACE).get("status", {}).get("admitted")
    assert webhook.proc.poll() is None


def test_with_the_webhook_the_server_refuses_every_invalid_manifest(
    cluster: Cluster, webhook: Operator, tmp_path: Path
) -> None:
    """The probe: what the server alone stored (InvalidSpec later) is now refused before storing."""
    files = write_corpus(tmp_path / "corpus")
    refused = server_verdicts(cluster, tmp_path / "corpus", files)
    print(f"corpus with the webhook: {len(files)} manifests, {len(refused)} refused by the server")
    assert refused == set(files), sorted(files[f] for f in set(files) - refused)
    assert webhook.proc.poll() is None
