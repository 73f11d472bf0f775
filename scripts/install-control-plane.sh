#!/usr/bin/env bash
# Builds the real Kubernetes control plane the end-to-end tests start (tests/e2e), from the
# published Go modules pinned in scripts/control-plane/*/go.mod (their `tool` directives):
#   kube-apiserver, kube-controller-manager,           k8s.io/kubernetes (staging modules pinned by
#   kube-scheduler, kubectl                            replace lines to the matching v0.x release)
#   etcd                                               go.etcd.io/etcd/server/v3
#   kwok                                               sigs.k8s.io/kwok (fake nodes and pods)
# into .tools/control-plane/<versions>/bin, linked as .tools/control-plane/current. A second run
# with the same versions builds nothing. A cold build takes about 8 minutes on 2 cores (Go's
# module and build caches make a rebuild take seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

KUBERNETES=v1.37.2
ETCD=v3.7.3
KWOK=v0.8.0
NAME="k8s-$KUBERNETES-etcd-$ETCD-kwok-$KWOK"
DEST=".tools/control-plane/$NAME"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok)

built() {
  for b in "${BINARIES[@]}"; do [ -x "$DEST/bin/$b" ] || return 1; done
}

if ! built; then
  command -v go >/dev/null || { echo "install-control-plane: needs Go (1.26) on PATH" >&2; exit 1; }
  work="$ROOT/.tools/control-plane/.build-$$"
  rm -rf "$work"
  mkdir -p "$work/bin"
  trap 'rm -rf "$work"' EXIT
  minor="${KUBERNETES#v1.}"
  minor="${minor%%.*}"
  stamp=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp+=" -X $pkg.gitVersion=$KUBERNETES -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  start=$(date +%s)
  (
    cd scripts/control-plane/kubernetes
    for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
      echo "install-control-plane: building $cmd $KUBERNETES"
      go build -trimpath -ldflags "-s -w $stamp" -o "$work/bin/$cmd" "k8s.io/kubernetes/cmd/$cmd"
    done
  )
  (
    cd scripts/control-plane/servers
    echo "install-control-plane: building etcd $ETCD"
    go build -trimpath -ldflags "-s -w" -o "$work/bin/etcd" go.etcd.io/etcd/server/v3
    echo "install-control-plane: building kwok $KWOK"
    go build -trimpath -ldflags "-s -w" -o "$work/bin/kwok" sigs.k8s.io/kwok/cmd/kwok
  )
  rm -rf "$DEST"
  mkdir -p "$(dirname "$DEST")"
  mv "$work" "$DEST"  # whole or not at all: a killed build is never taken for a cached one
  echo "install-control-plane: built in $(( $(date +%s) - start )) s"
fi
ln -sfn "$NAME" .tools/control-plane/current
"$DEST/bin/kube-apiserver" --version
"$DEST/bin/etcd" --version | head -n 1
