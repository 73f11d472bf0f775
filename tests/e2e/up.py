"""A one-node Kubernetes on this machine to try isoflop on: the tests' control plane, a real node
(kubelet, containerd, kube-proxy, CoreDNS) and the operator installed by helm from the image built
here. `make local-cluster` runs it; it prints the kubeconfig and runs until Ctrl-C, then takes
everything down again.

    python -m tests.e2e.up [--dir DIR] [--no-operator]

The cluster's folder holds its CA key and an admin (system:masters) client key: a folder of its
own making is private (0700) and removed on stop; one named with --dir is kept, and it says so.
It also writes quickstart.yaml there: the quickstart with the resources this node has (the
trainer image, no GPU, a CPU share), which `kubectl apply -f` runs as printed.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from isoflop import api
from tests.e2e.cluster import BIN, ROOT, Cluster, binaries_missing
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
    root = Path(args.dir or tempfile.mkdtemp(prefix="isoflop-cluster-"))  # mkdtemp: 0700
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
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
        sweep = write_quickstart(root / "quickstart.yaml", images["trainer"][0])
        print(
            f"\nlocal-cluster: node {NODE} ready in {time.monotonic() - started:.0f} s\n"
            f"  export KUBECONFIG={cluster.kubeconfig}\n"
            f"  export PATH={BIN}:$PATH   # this cluster's kubectl (v1.37)\n"
            f"  kubectl apply -f {sweep}   # the quickstart, on this node's CPU\n"
            "  kubectl get sweeps -w\n"
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
        if args.dir:
            print(f"local-cluster: kept {root} (its CA key and admin client key; private, 0700)")
        else:
            shutil.rmtree(root, ignore_errors=True)
            print(f"local-cluster: removed {root} (its keys with it)")
    return 0


def write_quickstart(path: Path, image: str) -> Path:
    """examples/quickstart.yaml with resources the one node has: the trainer image built here,
    no GPU, two trials at once in 900m and 2Gi each (the node has this machine's cores)."""
    manifest = api.yaml_load((ROOT / "examples" / "quickstart.yaml").read_text())
    manifest["spec"]["resources"] = {
        "image": image, "gpusPerNode": 0, "cpu": "900m", "memory": "2Gi",
    }  # fmt: skip
    manifest["spec"]["storage"] = {"sharedMemory": "256Mi"}
    api.parse_sweep(manifest)  # what it prints must be valid as it is
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


if __name__ == "__main__":
    sys.exit(main())
