#!/usr/bin/env bash
# Installs what a real test node and the image builds need, from Debian's packages: containerd
# and runc (the container runtime), the CNI plugins (bridge, host-local, loopback, portmap),
# iptables and iproute2 (kube-proxy, the node's network namespace), buildah and debootstrap (the
# images, without a Docker engine or a registry). Idempotent: a second run installs nothing.
# Needs root (or sudo) for apt-get. Debian's package may start a system containerd: the tests run
# their own, with their own socket and folders, and leave any other alone.
set -euo pipefail

PACKAGES=(containerd runc containernetworking-plugins iptables iproute2 buildah debootstrap
  util-linux)
need=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "install-node: ${need[*]} from Debian's packages"
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "install-node: need root or sudo for apt-get" >&2; exit 1; }
    sudo=sudo
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" \
    >/dev/null
fi
containerd --version
runc --version | head -n 1
