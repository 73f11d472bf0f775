"""Kueue beside the tests' control plane: its controller and webhooks as a process on 127.0.0.1,
built by `scripts/install-control-plane.sh` from the published module (sigs.k8s.io/kueue), its
CRDs and webhook configurations from the same module, as a cluster administrator installs them.

What differs from Kueue's release manifests is only where it runs: the webhooks are registered at
https://127.0.0.1:PORT (not a Service) with the tests' CA, serving the API server's certificate
(which names 127.0.0.1); the controller uses the administrator's kubeconfig; only the batch/Job
integration is on (no other framework's CRDs are installed); leader election, the metrics server
and the visibility API server are off; the client's rate limits are the release's (50 requests/s,
bursts of 100). Kueue reads its metrics certificate from the fixed path
/etc/kueue/metrics/certs whenever it does not manage certificates itself: the process gets its
own mount namespace with an overlay on /etc holding that file, so the host's /etc is untouched.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.cluster import ROOT, Cluster, free_port

KUEUE = ROOT / ".tools" / "kueue" / "current"
API = "kueue.x-k8s.io/v1beta2"
E2E_LABEL = "isoflop.test/kueue"  # on the webhook configurations the tests register


def missing() -> list[str]:
    """What this machine lacks to run Kueue here, in words; empty when it can."""
    out = []
    if not (KUEUE / "bin" / "kueue").exists():
        out.append("the kueue binary (make cluster)")
    if os.geteuid() != 0:
        out.append("root (Kueue runs in a mount namespace of its own)")
    if shutil.which("unshare") is None:
        out.append("unshare (util-linux)")
    return out


def webhook_configurations(manifests: str, port: int, ca: bytes) -> list[dict[str, Any]]:
    """Kueue's webhook configurations with every webhook of a Job or of Kueue's own kinds,
    called at 127.0.0.1:PORT with the path it has behind Kueue's Service."""
    out = []
    for doc in yaml.safe_load_all(manifests):
        if not doc:
            continue
        hooks = []
        for hook in doc.get("webhooks") or []:
            groups = {g for rule in hook.get("rules") or [] for g in rule.get("apiGroups") or []}
            if not groups <= {"batch", "kueue.x-k8s.io"}:
                continue  # another framework's (pods, Deployments, Ray, ...): not enabled here
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {
                "url": f"https://127.0.0.1:{port}{path}",
                "caBundle": base64.b64encode(ca).decode(),
            }
            hooks.append(hook)
        doc["metadata"] = {"name": f"kueue-e2e-{doc['kind'].lower()}", "labels": {E2E_LABEL: "1"}}
        doc["webhooks"] = hooks
        out.append(doc)
    return out


@dataclass
class Kueue:
    cluster: Cluster
    root: Path
    proc: subprocess.Popen[bytes] | None = None
    objects: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, namespace)

    def start(self) -> Kueue:
        c = self.cluster
        self.root.mkdir(parents=True, exist_ok=True)
        c.kubectl("apply", "--server-side", "-f", str(KUEUE / "config" / "crd"))

        def established() -> bool:  # `kubectl wait` fails on a CRD with no status yet
            crds = json.loads(c.kubectl("get", "crd", "-o", "json").stdout)["items"]
            ours = [d for d in crds if d["spec"]["group"] == "kueue.x-k8s.io"]
            return len(ours) == len(list((KUEUE / "config" / "crd").glob("*.yaml"))) and all(
                any(
                    x["type"] == "Established" and x["status"] == "True"
                    for x in (d.get("status") or {}).get("conditions") or []
                )
                for d in ours
            )

        c.wait_for(established, 60, "Kueue's CRDs")
        c.kubectl("create", "namespace", "kueue-system", check=False)
        certs = self.root / "certs"
        metrics = self.root / "etc-upper" / "kueue" / "metrics" / "certs"
        for d in (certs, metrics, self.root / "etc-work"):
            d.mkdir(parents=True, exist_ok=True)
        crt, key = c.pki.serving  # signed by the tests' CA, names 127.0.0.1
        for d in (certs, metrics):
            shutil.copy(crt, d / "tls.crt")
            shutil.copy(key, d / "tls.key")
        webhook_port, probe_port = free_port(), free_port()
        self.probe = f"http://127.0.0.1:{probe_port}"
        config = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": "kueue-system",
            "health": {"healthProbeBindAddress": f"127.0.0.1:{probe_port}"},
            "metrics": {"bindAddress": "0"},
            "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(certs)},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "integrations": {"frameworks": ["batch/job"]},
            "clientConnection": {"qps": 50, "burst": 100},  # as Kueue's release manifests set
        }
        (self.root / "config.yaml").write_text(yaml.safe_dump(config))
        overlay = (
            f"lowerdir=/etc,upperdir={self.root / 'etc-upper'},workdir={self.root / 'etc-work'}"
        )
        script = (
            f"mount -t overlay overlay -o {overlay} /etc && exec {KUEUE / 'bin' / 'kueue'} "
            f"--config={self.root / 'config.yaml'} --kubeconfig={c.kubeconfig} "
            "--feature-gates=VisibilityOnDemand=false --zap-log-level=info"
        )
        log = open(self.root / "kueue.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
        )  # fmt: skip
        c.wait_for(self.ready, 120, "kueue: " + self.log())
        ca = c.pki.ca.read_bytes()
        manifests = (KUEUE / "config" / "webhook" / "manifests.yaml").read_text()
        for doc in webhook_configurations(manifests, webhook_port, ca):
            c.kubectl("apply", "-f", "-", stdin=json.dumps(doc))
        return self

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"kueue exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"{self.probe}/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def log(self, tail: int = 40) -> str:
        path = self.root / "kueue.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(lines[-tail:])

    def apply(
        self, kind: str, name: str, spec: dict[str, Any], namespace: str = "", **top: Any
    ) -> None:
        """Create one of Kueue's objects (removed again by `stop`)."""
        meta: dict[str, Any] = {"name": name}
        if namespace:
            meta["namespace"] = namespace
        obj = {"apiVersion": API, "kind": kind, "metadata": meta, **top}
        if spec:
            obj["spec"] = spec
        self.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(obj))
        self.objects.append((kind, name, namespace))

    def workloads(self, namespace: str) -> list[dict[str, Any]]:
        out = self.cluster.kubectl("get", "workloads.kueue.x-k8s.io", "-n", namespace, "-o", "json")
        return list(json.loads(out.stdout)["items"])

    def stop(self) -> None:
        """Delete the queues the tests made (while Kueue runs to release their finalizers),
        unregister the webhooks (a Job created while they point at no server would be refused),
        then stop Kueue, whatever failed before."""
        c = self.cluster
        try:
            for kind, name, namespace in reversed(self.objects):
                where = ["-n", namespace] if namespace else []
                c.kubectl("delete", f"{kind.lower()}.kueue.x-k8s.io", name, *where,
                          "--ignore-not-found", "--wait=false", check=False)  # fmt: skip
            c.kubectl(
                "delete", "mutatingwebhookconfigurations,validatingwebhookconfigurations",
                "-l", E2E_LABEL, "--ignore-not-found", check=False,
            )  # fmt: skip
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
