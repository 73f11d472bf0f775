"""A real Kubernetes node beside the tests' control plane: kubelet, containerd, runc, the bridge
CNI, kube-proxy and CoreDNS in a network namespace of the tests' own, as `hack/local-up-cluster.sh`
starts one.

    root namespace                              network namespace isoflop-node
    127.0.0.1: etcd, kube-apiserver, ...        10.213.0.2: kubelet, containerd, kube-proxy,
    10.213.0.1: forwarder to the API server,      CoreDNS (the pods' DNS server)
      S3, Prometheus (what pods reach)    <-veth->  cni0 10.214.0.1: pods in 10.214.0.0/24
    route 10.214.0.0/24 via 10.213.0.2

Images are never pulled: `scripts/build-images.sh` saves them as OCI archives and they are
imported into containerd's `k8s.io` namespace, whose root is kept in the user's data directory
(images imported once per machine, whatever the clone). What a kubelet leaves outside its folders
(cgroups in every hierarchy, three kernel sysctls it rewrites, a bind mount of its root, its
device-plugin and container-log folders) is put back by `stop`, and `stop` runs first in `start`
too, so a run killed half way is cleaned up by the next.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.cluster import BIN, NODE_HOST_IP, ROOT, Cluster, free_port, kubeconfig
from tests.net import Forwarder

NETNS = "isoflop-node"
NODE = "isoflop-node"
HOST_VETH, NODE_VETH = "isoflop-h", "isoflop-n"
NODE_IP = "10.213.0.2"
POD_CIDR = "10.214.0.0/24"
CLUSTER_DOMAIN = "cluster.local"
SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")  # kubelet rewrites these
CGROUP = Path("/sys/fs/cgroup")
HOST_PATHS = (Path("/var/lib/kubelet/device-plugins"), Path("/var/log/containers"))


def cache_dir() -> Path:
    """Where builds shared by every clone on this machine live (as setup-envtest keeps its own)."""
    explicit = os.environ.get("ISOFLOP_CACHE")
    if explicit:
        return Path(explicit)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "isoflop"


RECORD = cache_dir() / "node" / "running"  # the root of the node last started on this machine


def missing() -> list[str]:
    """What this machine lacks for a real node, in words; empty when it can run one."""
    out = [
        f"{n} (make cluster)"
        for n in ("kubelet", "kube-proxy", "coredns")
        if not (BIN / n).exists()
    ]
    tools = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables", "nsenter")
    for tool in tools:
        if shutil.which(tool) is None:
            out.append(f"{tool} (scripts/install-node.sh)")
    if not Path("/usr/lib/cni/bridge").exists():
        out.append("the CNI plugins (scripts/install-node.sh)")
    if os.geteuid() != 0:
        out.append("root")
    return out


def in_netns(cmd: list[str]) -> list[str]:
    """`cmd` in the node's network namespace, and in the host's mount namespace: `ip netns exec`
    would give each process a mount namespace of its own, and containerd would not see the volumes
    the kubelet mounts."""
    return ["nsenter", f"--net=/run/netns/{NETNS}", "--", *cmd]


def run(
    *args: str, check: bool = True, netns: bool = False, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    cmd = in_netns(list(args)) if netns else list(args)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip() or out.stdout.strip()}")
    return out


# ------------------------------------------------------------------------------------------------


CONTAINERD = """version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # root here lacks CAP_SYS_RESOURCE: without this runc fails ("can't get final child's PID")
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"""

COREFILE = """.:53 {{
    errors
    kubernetes {domain} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} e2e
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    bind {ip}
}}
"""


@dataclass
class Node:
    """One real node: `start(cluster, images)`, then pods run on it; `stop()` puts the host back."""

    root: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    forwarder: Forwarder | None = None
    sysctls: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # how long each start step took

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd.sock"

    def start(self, cluster: Cluster, images: dict[str, Path]) -> Node:
        """`images`: reference -> OCI archive (scripts/build-images.sh); the first is the pause
        image every pod's sandbox runs."""
        lacking = missing()
        if lacking:
            raise RuntimeError("a real node needs " + ", ".join(lacking))
        stop_leftovers()
        self.root.mkdir(parents=True, exist_ok=True)
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(str(self.root))  # a run killed half way is cleaned up by the next
        self.sysctls = {k: (Path("/proc/sys") / k).read_text().strip() for k in SYSCTLS}
        self._network()
        self.forwarder = Forwarder(NODE_HOST_IP, int(cluster.server.rsplit(":", 1)[1]))
        server = f"https://{NODE_HOST_IP}:{self.forwarder.port}"
        pki = cluster.pki
        configs = {
            name: kubeconfig(
                self.root / f"{name}.kubeconfig", server, pki.ca,
                {"client-certificate": str(crt), "client-key": str(key)}, "default",
            )
            for name, (crt, key) in (
                ("kubelet", pki.kubelet), ("kube-proxy", pki.kube_proxy), ("coredns", pki.coredns)
            )
        }  # fmt: skip
        # pods reach the API server as the `kubernetes` Service: 10.0.0.1:443 -> the forwarder
        self._kubernetes_endpoints(cluster)
        started = time.monotonic()
        self._containerd(next(iter(images)))
        self._import(images)
        self.seconds["containerd and images"] = time.monotonic() - started
        self._kubelet(configs["kubelet"], pki.ca)
        cluster.wait_for(
            lambda: self._exited() or "True" in cluster.kubectl(
                "get", "node", NODE, "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False,
            ).stdout,
            120, "the real node",
        )  # fmt: skip
        self.seconds["kubelet ready"] = time.monotonic() - started - sum(self.seconds.values())
        self._kube_proxy(configs["kube-proxy"])
        corefile = self.root / "Corefile"
        corefile.write_text(
            COREFILE.format(domain=CLUSTER_DOMAIN, kubeconfig=configs["coredns"], ip=NODE_IP)
        )
        self._spawn("coredns", [str(BIN / "coredns"), "-conf", str(corefile)])
        return self

    def _exited(self) -> bool:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
        return False

    # -- network ---------------------------------------------------------------------------------

    def _network(self) -> None:
        run("ip", "netns", "add", NETNS)
        run("ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", NODE_VETH)
        run("ip", "link", "set", NODE_VETH, "netns", NETNS)
        run("ip", "addr", "add", f"{NODE_HOST_IP}/30", "dev", HOST_VETH)
        run("ip", "link", "set", HOST_VETH, "up")
        run("ip", "addr", "add", f"{NODE_IP}/30", "dev", NODE_VETH, netns=True)
        run("ip", "link", "set", NODE_VETH, "up", netns=True)
        run("ip", "link", "set", "lo", "up", netns=True)
        run("ip", "route", "add", "default", "via", NODE_HOST_IP, netns=True)
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=True)
        run("ip", "route", "add", POD_CIDR, "via", NODE_IP)
        cni = self.root / "cni"
        cni.mkdir(exist_ok=True)
        (cni / "10-isoflop.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "isoflop",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "cni0",
                            "isGateway": True,
                            "ipMasq": True,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_CIDR}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(self.root / "cni-ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=1,
            )
        )

    def _kubernetes_endpoints(self, cluster: Cluster) -> None:
        assert self.forwarder is not None
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [NODE_HOST_IP], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": self.forwarder.port, "protocol": "TCP"}],
        }
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps(slice_))

    # -- processes -------------------------------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            in_netns(cmd),
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True,
        )  # fmt: skip

    def log(self, name: str, tail: int = 40) -> str:
        lines = (self.root / f"{name}.log").read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:])

    def _containerd(self, pause: str) -> None:
        images = cache_dir() / "node" / "containerd"  # kept: images are imported once
        images.mkdir(parents=True, exist_ok=True)
        config = self.root / "containerd.toml"
        config.write_text(
            CONTAINERD.format(
                root=images, state=self.root / "containerd-state", socket=self.containerd_socket,
                pause=pause, cni=self.root / "cni",
            )
        )  # fmt: skip
        self._spawn("containerd", ["containerd", "--config", str(config)])
        deadline = time.monotonic() + 30
        while self.ctr("version", check=False).returncode != 0:
            self._exited()
            if time.monotonic() > deadline:
                raise RuntimeError(f"containerd not ready:\n{self.log('containerd')}")
            time.sleep(0.2)

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run("ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", *args,
                   check=check, timeout=timeout)  # fmt: skip

    def _import(self, images: dict[str, Path]) -> None:
        have = set(self.ctr("images", "list", "--quiet").stdout.split())
        stale = [r for r in have if r.startswith("localhost/isoflop-") and r not in images]
        if stale:  # earlier builds' images, and their layers with them (--sync)
            self.ctr("images", "remove", "--sync", *stale)
        for ref, archive in images.items():
            if ref not in have:
                # unpacking the trainer's 3 GB is bound by gzip and the disk: about 80 s on 2
                # idle cores, and past 120 s on a busy machine (the CI run of 2026-12-04)
                self.ctr("images", "import", "--no-unpack=false", str(archive), timeout=900)
                if ref not in set(self.ctr("images", "list", "--quiet").stdout.split()):
                    raise RuntimeError(f"{archive} imported no image named {ref}")

    def _kubelet(self, config_path: Path, ca: Path) -> None:
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,  # the hosts' cgroups are v1 (KEP-5573)
            "cgroupDriver": "cgroupfs",
            # true exits (the host's sysctls differ); false rewrites three: put back by stop()
            "protectKernelDefaults": False,
            "failSwapOn": False,
            "address": NODE_IP,
            "readOnlyPort": 0,
            "healthzPort": 0,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(ca)},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "clusterDomain": CLUSTER_DOMAIN,
            "clusterDNS": [NODE_IP],
            "resolvConf": str(self._resolv_conf()),
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "podLogsDir": str(self.root / "pod-logs"),
            "volumePluginDir": str(self.root / "volume-plugins"),
            # a test machine's disk and memory run low: evict only when truly out
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            # the images are imported, never pulled: garbage collection must never remove one
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "maxPods": 40,
        }
        path = self.root / "kubelet.yaml"
        path.write_text(json.dumps(config, indent=1))
        self._spawn(
            "kubelet",
            [
                str(BIN / "kubelet"),
                f"--config={path}",
                f"--kubeconfig={config_path}",
                f"--root-dir={self.root / 'kubelet'}",
                f"--cert-dir={self.root / 'kubelet-pki'}",
                f"--hostname-override={NODE}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )

    def _resolv_conf(self) -> Path:
        """The node's own resolver for pods with dnsPolicy Default: nothing outside is reachable."""
        path = self.root / "resolv.conf"
        path.write_text(f"nameserver {NODE_IP}\n")
        return path

    def _kube_proxy(self, config_path: Path) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(config_path)},
            "hostnameOverride": NODE,
            "bindAddress": NODE_IP,
            "clusterCIDR": POD_CIDR,
            "metricsBindAddress": f"{NODE_IP}:{free_port()}",
            "healthzBindAddress": f"{NODE_IP}:{free_port()}",
            # a pod calling a Service on its own bridge gets the reply back through the node
            "iptables": {"masqueradeAll": True},
            "conntrack": {"maxPerCore": 0, "min": 0},  # leave the host's conntrack table alone
        }
        path = self.root / "kube-proxy.yaml"
        path.write_text(json.dumps(config, indent=1))
        self._spawn("kube-proxy", [str(BIN / "kube-proxy"), f"--config={path}", "--v=1"])

    def stop(self) -> None:
        for name in ("coredns", "kube-proxy", "kubelet"):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        stop_leftovers(self.root, containerd=self.procs.get("containerd"))
        for name, value in self.sysctls.items():
            (Path("/proc/sys") / name).write_text(value)
        if self.forwarder is not None:
            self.forwarder.close()
        self.procs.clear()


def stop_leftovers(
    root: Path | None = None, containerd: subprocess.Popen[bytes] | None = None
) -> None:
    """Everything a node leaves on the host, removed: its pods' processes and cgroups, containerd,
    the network namespace, the veth and route, mounts under its root, the kubelet's host folders.
    Safe to run when nothing is left."""
    # every process in the node's network namespace: containerd, shims, pods
    pids = run("ip", "netns", "pids", NETNS, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    if containerd is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            containerd.wait(timeout=10)
    for pid in _pids_in_cgroups():  # pod processes that left the namespace's process list
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _remove_cgroups() and time.monotonic() < deadline:
        time.sleep(0.2)
    roots = {str(root)} if root is not None else set()
    if RECORD.exists():
        roots.add(RECORD.read_text().strip())
    mounts = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if any(line.split()[1].startswith(r + "/") for r in roots)
    ]
    for mount in sorted(mounts, key=len, reverse=True):  # the deepest first
        run("umount", "-l", mount, check=False)
    RECORD.unlink(missing_ok=True)
    run("ip", "route", "del", POD_CIDR, check=False)
    run("ip", "link", "del", HOST_VETH, check=False)
    run("ip", "netns", "del", NETNS, check=False)
    for path in HOST_PATHS:
        shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):  # the kubelet made it for its device plugins: if empty
        HOST_PATHS[0].parent.rmdir()


def _kubepods() -> list[Path]:
    return [d / "kubepods" for d in CGROUP.iterdir() if (d / "kubepods").is_dir()]


def _pids_in_cgroups() -> list[int]:
    pids: set[int] = set()
    for top in _kubepods():
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
    return sorted(pids)


def _remove_cgroups() -> bool:
    """Removes the kubepods cgroups, deepest first; True while some remain."""
    left = False
    for top in _kubepods():
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
        left = left or top.exists()
    return left


def images_built() -> dict[str, Any]:
    """Builds (or finds) the images: {name: (reference, archive)} from scripts/build-images.sh."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "build-images.sh")],
        capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"scripts/build-images.sh failed:\n{out.stderr[-3000:]}")
    images = {}
    for line in out.stdout.splitlines():
        name, ref, archive = line.split()
        images[name] = (ref, Path(archive))
    return images
