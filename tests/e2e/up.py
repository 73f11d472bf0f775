"""A one-node Kubernetes on this machine to try isoflop on: the tests' control plane, a real node
(kubelet, containerd, kube-proxy, CoreDNS) and the operator installed by helm from the image built
here. `make local-cluster` runs it; it prints the kubeconfig and runs until Ctrl-C, then takes
everything down again.

    python -m tests.e2e.up [--dir DIR] [--no-operator]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.e2e.cluster import ROOT, Cluster, binaries_missing
from tests.e2e.node import NODE, Node, images_built, missing

HELM = ROOT / ".tools" / "bin" / "helm"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.e2e.up", description=__doc__.split("\n")[0])
    ap.add_argument("--dir", help="where the cluster's files go (default: a new temporary folder)")
    ap.add_argument("--no-operator", action="store_true", help="do not helm install the operator")
    args = ap.parse_args(argv)
    lacking = [f"{b} (make cluster)" for b in binaries_missing()] + missing()
    if lacking:
        print(f"local-cluster: this machine lacks {', '.join(lacking)}", file=sys.stderr)
        return 1
    root = Path(args.dir or tempfile.mkdtemp(prefix="isoflop-cluster-"))
    started = time.monotonic()
    print("local-cluster: building or finding the images (scripts/build-images.sh)", flush=True)
    images = images_built()
    cluster = Cluster(root / "cluster")
    node = Node(root / "node")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        cluster.start()
        node.start(cluster, dict([images["pause"], images["operator"], images["trainer"]]))
        if not args.no_operator:
            repository, tag = images["operator"][0].rsplit(":", 1)
            subprocess.run(
                [str(HELM), "upgrade", "--install", "isoflop", str(ROOT / "helm" / "isoflop"),
                 "--namespace", "isoflop-system", "--create-namespace",
                 "--kubeconfig", str(cluster.kubeconfig),
                 "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                 "--set", "image.pullPolicy=Never", "--wait", "--timeout=300s"],
                check=True,
            )  # fmt: skip
        print(
            f"\nlocal-cluster: node {NODE} ready in {time.monotonic() - started:.0f} s\n"
            f"  export KUBECONFIG={cluster.kubeconfig}\n"
            f"  trainer image: {images['trainer'][0]} (spec.resources.image; gpusPerNode: 0)\n"
            "Ctrl-C stops it and puts the machine back.",
            flush=True,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nlocal-cluster: stopping", flush=True)
    finally:
        node.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
