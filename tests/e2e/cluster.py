"""A real Kubernetes control plane on 127.0.0.1 for the end-to-end tests.

etcd, kube-apiserver (RBAC, admission, CRD validation, garbage collection through the controller
manager), kube-controller-manager (Jobs, garbage collector, service accounts), kube-scheduler and
kwok (fake nodes; pods that run, succeed or fail on command) from the binaries that
`scripts/install-control-plane.sh` builds into `.tools/control-plane/current/bin`.

The PKI is made here: a CA, the API server's serving certificate (127.0.0.1 and the in-cluster
names), client certificates for the administrator and each component, and the service-account
signing key. `Cluster.kubeconfig` is the administrator's; `Cluster.service_account_kubeconfig`
gives a ServiceAccount's token, with exactly its RBAC rights.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".tools" / "control-plane" / "current" / "bin"
SERVICE_CIDR = "10.0.0.0/24"
STAGES = Path(__file__).with_name("kwok-stages.yaml")
# The real node (tests/e2e/node.py) lives in a network namespace joined to this one by a veth:
# this end's address is where the node reaches the API server (a forwarder to 127.0.0.1), the S3
# server and Prometheus; it is in the API server's certificate.
NODE_HOST_IP = "10.213.0.1"
FAKE_NODE = "kwok.x-k8s.io/node"  # the annotation of nodes kwok plays the kubelet for
EXIT_CODE, MESSAGE = "isoflop.test/exit-code", "isoflop.test/message"  # see kwok-stages.yaml


def binaries_missing() -> list[str]:
    names = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"]
    return [n for n in [*names, "kwok"] if not (BIN / n).exists()]


def node_binaries_missing() -> list[str]:
    return [n for n in ("kubelet", "kube-proxy", "coredns") if not (BIN / n).exists()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------------
# PKI


@dataclass
class Pki:
    root: Path

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.root.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)

        def key() -> rsa.RSAPrivateKey:
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)

        def write_key(k: rsa.RSAPrivateKey, path: Path) -> None:
            path.write_bytes(
                k.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                )
            )

        ca_key = key()
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "isoflop-e2e-ca")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca = self.root / "ca.crt"
        self.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

        def issue(name: str, cn: str, org: str | None, server: bool) -> tuple[Path, Path]:
            k = key()
            attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
            if org:
                attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
            builder = (
                x509.CertificateBuilder()
                .subject_name(x509.Name(attrs))
                .issuer_name(ca_name)
                .public_key(k.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(
                    x509.ExtendedKeyUsage(
                        [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
                        if server
                        else [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
                    ),
                    critical=False,
                )
            )
            if server:
                names: list[x509.GeneralName] = [
                    x509.DNSName(n)
                    for n in (
                        "localhost",
                        "kubernetes",
                        "kubernetes.default",
                        "kubernetes.default.svc",
                        "kubernetes.default.svc.cluster.local",
                    )
                ]
                names += [
                    x509.IPAddress(ipaddress.ip_address(a))
                    for a in ("127.0.0.1", "10.0.0.1", NODE_HOST_IP)
                ]
                builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
            cert = builder.sign(ca_key, hashes.SHA256())
            crt, pem = self.root / f"{name}.crt", self.root / f"{name}.key"
            crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            write_key(k, pem)
            return crt, pem

        self.serving = issue("apiserver", "kube-apiserver", None, server=True)
        self.admin = issue("admin", "isoflop-e2e-admin", "system:masters", server=False)
        self.controller_manager = issue(
            "controller-manager", "system:kube-controller-manager", None, server=False
        )
        self.scheduler = issue("scheduler", "system:kube-scheduler", None, server=False)
        self.kwok = issue("kwok", "kwok", "system:masters", server=False)
        # the real node's components: the Node authorizer and the default RBAC know these names
        self.kubelet = issue("kubelet", "system:node:isoflop-node", "system:nodes", server=False)
        self.kube_proxy = issue("kube-proxy", "system:kube-proxy", None, server=False)
        self.coredns = issue("coredns", "coredns", "system:masters", server=False)
        sa = key()
        self.sa_key = self.root / "sa.key"
        write_key(sa, self.sa_key)
        self.sa_pub = self.root / "sa.pub"
        self.sa_pub.write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def kubeconfig(path: Path, server: str, ca: Path, user: dict[str, str], namespace: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "e2e", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [
            {"name": "e2e", "context": {"cluster": "e2e", "user": "user", "namespace": namespace}}
        ],
        "current-context": "e2e",
    }
    path.write_text(json.dumps(config, indent=1))
    return path


# ------------------------------------------------------------------------------------------------
# processes


AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts:{namespace}"]
- level: None
"""


@dataclass
class Cluster:
    root: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    audit_namespace: str | None = None  # log the requests of this namespace's ServiceAccounts

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.log"

    def start(self) -> Cluster:
        missing = binaries_missing()
        if missing:
            raise RuntimeError(
                f"control-plane binaries missing ({', '.join(missing)}): run "
                "scripts/install-control-plane.sh (make cluster)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self.pki = Pki(self.root / "pki")
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self.server = f"https://127.0.0.1:{api_port}"
        self._spawn(
            "etcd",
            [
                "--name=e2e",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=e2e=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",  # a throwaway store: no fsync, much faster on a shared disk
                "--log-level=warn",
            ],
        )
        crt, key = self.pki.serving
        audit: list[str] = []
        if self.audit_namespace is not None:
            policy = self.root / "audit-policy.yaml"
            policy.write_text(AUDIT_POLICY.format(namespace=self.audit_namespace))
            audit = [
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
            ]
        self._spawn(
            "kube-apiserver",
            [
                *audit,
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",  # loopback cannot be an endpoint
                f"--secure-port={api_port}",
                f"--tls-cert-file={crt}",
                f"--tls-private-key-file={key}",
                f"--client-ca-file={self.pki.ca}",
                f"--service-account-key-file={self.pki.sa_pub}",
                f"--service-account-signing-key-file={self.pki.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                # a real kubelet (tests/e2e/node.py): logs and exec by its address, not a DNS name
                f"--kubelet-client-certificate={self.pki.admin[0]}",
                f"--kubelet-client-key={self.pki.admin[1]}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                # webhooks served by pods: call the pod's address (routed to the node's network
                # namespace), since no kube-proxy runs in this namespace for a Service's ClusterIP
                "--enable-aggregator-routing=true",
                f"--cert-dir={self.root / 'certs'}",
                "--profiling=false",
                "--v=1",
            ],
        )
        self.kubeconfig = kubeconfig(
            self.root / "admin.kubeconfig",
            self.server,
            self.pki.ca,
            {"client-certificate": str(self.pki.admin[0]), "client-key": str(self.pki.admin[1])},
            "default",
        )
        self.wait_ready()
        components = {
            "kube-controller-manager": self.pki.controller_manager,
            "kube-scheduler": self.pki.scheduler,
        }
        configs = {
            name: kubeconfig(
                self.root / f"{name}.kubeconfig",
                self.server,
                self.pki.ca,
                {"client-certificate": str(c), "client-key": str(k)},
                "kube-system",
            )
            for name, (c, k) in components.items()
        }
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={configs['kube-controller-manager']}",
                f"--authentication-kubeconfig={configs['kube-controller-manager']}",
                f"--authorization-kubeconfig={configs['kube-controller-manager']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={self.pki.sa_key}",
                f"--root-ca-file={self.pki.ca}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={configs['kube-scheduler']}",
                f"--authentication-kubeconfig={configs['kube-scheduler']}",
                f"--authorization-kubeconfig={configs['kube-scheduler']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        kwok_config = kubeconfig(
            self.root / "kwok.kubeconfig",
            self.server,
            self.pki.ca,
            {"client-certificate": str(self.pki.kwok[0]), "client-key": str(self.pki.kwok[1])},
            "default",
        )
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={kwok_config}",
                f"--config={STAGES}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={FAKE_NODE}=fake",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.1.0.1",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )
        # the default ServiceAccount appears once the controller manager runs
        self.wait_for(
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            60,
            "the default ServiceAccount",
        )
        return self

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [str(BIN / name), *args], stdout=log, stderr=subprocess.STDOUT, cwd=self.root
        )

    def log(self, name: str, tail: int = 40) -> str:
        lines = (self.root / f"{name}.log").read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:])

    def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            if predicate():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what} not ready after {timeout:.0f} s")

    def wait_ready(self) -> None:
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.load_cert_chain(*map(str, self.pki.admin))

        def ready() -> bool:
            try:
                with urllib.request.urlopen(
                    f"{self.server}/readyz", context=context, timeout=2
                ) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        self.wait_for(ready, 90, "kube-apiserver")

    def kubectl(
        self, *args: str, check: bool = True, kubeconfig: Path | None = None, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(BIN / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=stdin or None,
            timeout=120,
            check=False,
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path) -> Path:
        """A kubeconfig with a token of the ServiceAccount: its RBAC rights, nothing more."""
        token = self.kubectl(
            "create", "token", name, "-n", namespace, "--duration=24h"
        ).stdout.strip()
        return kubeconfig(path, self.server, self.pki.ca, {"token": token}, namespace)

    def add_gpu_node(self, name: str, gpus: int = 8, extra: dict[str, str] | None = None) -> None:
        """A fake GPU node that kwok keeps Ready; the scheduler places trial pods on it. `extra`:
        more resources it advertises (a GPU-sharing plugin's replicas)."""
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {FAKE_NODE: "fake"},
                "labels": {"kubernetes.io/hostname": name, "type": "kwok"},
            },
            "status": {
                "capacity": {
                    "cpu": "64",
                    "memory": "512Gi",
                    "pods": "110",
                    "nvidia.com/gpu": str(gpus),
                    **(extra or {}),
                },
            },
        }
        self.kubectl("apply", "-f", "-", stdin=json.dumps(node))
        self.wait_for(
            lambda: (
                "True"
                in self.kubectl(
                    "get",
                    "node",
                    name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                ).stdout
            ),
            30,
            f"node {name}",
        )

    def exit_pod(self, namespace: str, pod: str, code: int, message: dict[str, Any]) -> None:
        """End a running pod as its container would: exit code and termination message."""
        self.kubectl(
            "annotate",
            "pod",
            pod,
            "-n",
            namespace,
            "--overwrite",
            f"{MESSAGE}={json.dumps(message)}",
            f"{EXIT_CODE}={code}",
        )

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def env_with(kubeconfig_path: Path) -> dict[str, str]:
    out = dict(os.environ)
    out["KUBECONFIG"] = str(kubeconfig_path)
    out.pop("KUBERNETES_SERVICE_HOST", None)
    return out


class Operator:
    """The operator as a process, with the chart's ServiceAccount token (not an administrator)."""

    def __init__(self, kubeconfig: Path, log: Path, env: dict[str, str] | None = None) -> None:
        env = env_with(kubeconfig) | {"ISOFLOP_RECONCILE_SECONDS": "0.5"} | (env or {})
        self.log = log
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kopf", "run", "--module=isoflop.cluster.handlers",
                 "--all-namespaces", "--standalone"],
                stdout=f, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def trial_records(cluster: Cluster, sweep: str, namespace: str = "default") -> list[dict[str, Any]]:
    """The per-trial records the operator keeps in the sweep's ConfigMaps (one per budget)."""
    out = cluster.kubectl(
        "get", "configmaps", "-n", namespace, "-o", "json",
        "-l", f"isoflop.dev/sweep={sweep},isoflop.dev/role=trial-records",
    )  # fmt: skip
    items = json.loads(out.stdout)["items"]
    return [json.loads(v) for cm in items for v in (cm.get("data") or {}).values()]
