#!/usr/bin/env bash
# Builds the real Kubernetes control plane and node the end-to-end tests start (tests/e2e), from
# the published Go modules pinned in scripts/control-plane/*/go.mod (their `tool` directives):
#   kube-apiserver, kube-controller-manager,           k8s.io/kubernetes (staging modules pinned by
#   kube-scheduler, kubectl, kubelet, kube-proxy       replace lines to the matching v0.x release)
#   etcd                                               go.etcd.io/etcd/server/v3
#   kwok                                               sigs.k8s.io/kwok (fake nodes and pods)
#   coredns                                            github.com/coredns/coredns (cluster DNS)
#   kueue (controller and webhooks, its CRDs and       sigs.k8s.io/kueue (job queueing, quotas,
#   webhook configurations from the same module)       preemption: tests/e2e/kueue.py)
# into the user's data directory, shared by every clone on the machine as setup-envtest shares its
# binaries: ${ISOFLOP_CACHE:-${XDG_DATA_HOME:-~/.local/share}/isoflop}/control-plane/<versions>/bin,
# linked from the clone as .tools/control-plane/current. A second run with the same versions, from
# any clone, builds nothing. A build takes about 14 minutes on 2 cores and about 6 GB of scratch
# disk (Go's module and build caches), given back when it ends: the binaries (0.7 GB) are the cache. ISOFLOP_KEEP_GO_CACHE=1 uses Go's own caches instead and keeps them, so that a rebuild
# after a version change takes seconds rather than minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

KUBERNETES=v1.37.2
ETCD=v3.7.3
KWOK=v0.8.0
COREDNS=v1.14.1
NAME="k8s-$KUBERNETES-etcd-$ETCD-kwok-$KWOK-coredns-$COREDNS"
CACHE="${ISOFLOP_CACHE:-${XDG_DATA_HOME:-$HOME/.local/share}/isoflop}"
DEST="$CACHE/control-plane/$NAME"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy etcd kwok
  coredns)

built() {
  for b in "${BINARIES[@]}"; do [ -x "$DEST/bin/$b" ] || return 1; done
}

if ! built; then
  command -v go >/dev/null || { echo "install-control-plane: needs Go (1.26) on PATH" >&2; exit 1; }
  work="$CACHE/control-plane/.build-$$"
  rm -rf "$work"
  mkdir -p "$work/bin"
  trap 'if [ -d "$work" ]; then chmod -R u+w "$work"; rm -rf "$work"; fi' EXIT
  if [ "${ISOFLOP_KEEP_GO_CACHE:-0}" != 1 ]; then
    export GOCACHE="$work/go-cache" GOMODCACHE="$work/go-mod" GOFLAGS="${GOFLAGS:-} -modcacherw"
  fi
  mkdir -p "$CACHE/control-plane"
  df -h "$CACHE" | awk 'NR==2 {print "install-control-plane: " $4 " of disk free before the build"}'
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
    for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
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
  (
    cd scripts/control-plane/coredns
    echo "install-control-plane: building coredns $COREDNS"
    go build -trimpath -ldflags "-s -w" -o "$work/bin/coredns" github.com/coredns/coredns
  )
  rm -rf "$work/go-cache" "$work/go-mod"
  rm -rf "$DEST"
  mkdir -p "$(dirname "$DEST")"
  mv "$work" "$DEST"  # whole or not at all: a killed build is never taken for a cached one
  echo "install-control-plane: built in $(( $(date +%s) - start )) s"
fi
mkdir -p .tools/control-plane
ln -sfn "$DEST" .tools/control-plane/current

# Kueue: a cache entry of its own, so that a new Kueue version rebuilds only Kueue (about 5
# minutes on 2 cores). Beside the binary, the module's CRDs and webhook configurations: the tests
# install them as a cluster administrator installs Kueue's release manifests.
KUEUE=v0.17.0
KUEUE_DEST="$CACHE/control-plane/kueue-$KUEUE"
if [ ! -x "$KUEUE_DEST/bin/kueue" ] || [ ! -f "$KUEUE_DEST/config/webhook/manifests.yaml" ]; then
  command -v go >/dev/null || { echo "install-control-plane: needs Go (1.26) on PATH" >&2; exit 1; }
  work="$CACHE/control-plane/.build-kueue-$$"
  rm -rf "$work"
  mkdir -p "$work/bin" "$work/config/crd" "$work/config/webhook"
  trap 'if [ -d "$work" ]; then chmod -R u+w "$work"; rm -rf "$work"; fi' EXIT
  if [ "${ISOFLOP_KEEP_GO_CACHE:-0}" != 1 ]; then
    export GOCACHE="$work/go-cache" GOMODCACHE="$work/go-mod" GOFLAGS="${GOFLAGS:-} -modcacherw"
  fi
  start=$(date +%s)
  (
    cd scripts/control-plane/kueue
    echo "install-control-plane: building kueue $KUEUE"
    go build -trimpath -ldflags "-s -w" -o "$work/bin/kueue" sigs.k8s.io/kueue/cmd/kueue
    src="$(go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)"
    cp "$src"/config/components/crd/bases/*.yaml "$work/config/crd/"
    cp "$src/config/components/webhook/manifests.yaml" "$work/config/webhook/"
  )
  rm -rf "$work/go-cache" "$work/go-mod"
  rm -rf "$KUEUE_DEST"
  mv "$work" "$KUEUE_DEST"
  echo "install-control-plane: built kueue in $(( $(date +%s) - start )) s"
fi
mkdir -p .tools/kueue
ln -sfn "$KUEUE_DEST" .tools/kueue/current
"$DEST/bin/kube-apiserver" --version
"$DEST/bin/etcd" --version | sed -n 1p  # sed reads it all: head would SIGPIPE etcd (pipefail)
