#!/usr/bin/env bash
# Builds the images the real-pod tests (tests/e2e) run, without a Docker engine and without a
# registry, from the project's own Dockerfiles:
#   base      Debian (debootstrap, from this machine's apt mirror) with python3.11 and pip: what
#             python:3.11-slim gives the Dockerfiles
#   pause     base with `sleep infinity`: the sandbox image of every pod
#   torch     base + torch from PyPI (the CPU-capable build the tests' venv has): what the CUDA
#             base gives trainer/Dockerfile
#   operator  operator/Dockerfile  FROM base     (BASE build argument)
#   trainer   trainer/Dockerfile   FROM torch    (BASE build argument)
# Each image is saved as an OCI archive under
#   ${ISOFLOP_CACHE:-${XDG_DATA_HOME:-~/.local/share}/isoflop}/images/<name>-<hash>.tar
# keyed by a hash of what goes into it (Dockerfile, sources, the image below it), so any clone on
# the machine reuses it; the test node's containerd imports it into its `k8s.io` namespace.
# Prints one line per image: name, reference and archive path. Needs root (debootstrap, buildah).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH=${TORCH_VERSION:-2.13.0}
SUITE=bookworm
CACHE="${ISOFLOP_CACHE:-${XDG_DATA_HOME:-$HOME/.local/share}/isoflop}"
IMAGES="$CACHE/images"
mkdir -p "$IMAGES"
exec 9>"$IMAGES/.lock"  # one build at a time on the machine; another clone's waits, then reuses
flock 9
rm -f "$IMAGES"/*.part  # what a killed build left
export STORAGE_DRIVER=overlay BUILDAH_ISOLATION=chroot
# buildah's own storage is scratch: everything kept is in the archives
export CONTAINERS_STORAGE_CONF="$IMAGES/.storage.conf"
cat >"$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "overlay"
runroot = "$IMAGES/.run"
graphroot = "$IMAGES/.storage"
EOF

# pip in the build steps trusts what this machine trusts (a registry mirror or proxy with its own
# CA): the host's CA bundle and a pip.conf naming it are mounted into RUN steps, never kept in an
# image
HOST_CA=/etc/ssl/certs/ca-certificates.crt
printf '[global]\ncert = /etc/ssl/certs/host-ca.crt\n' >"$IMAGES/.pip.conf"
TRUST=()
if [ -f "$HOST_CA" ]; then
  TRUST=(-v "$HOST_CA:/etc/ssl/certs/host-ca.crt:ro" -v "$IMAGES/.pip.conf:/etc/pip.conf:ro")
fi

for tool in debootstrap buildah; do
  command -v "$tool" >/dev/null || {
    echo "build-images: needs $tool (scripts/install-node.sh installs it)" >&2
    exit 1
  }
done

hash_of() { cat "$@" | sha256sum | cut -c1-12; }
# the sources an image copies (its own Dockerfile is hashed apart: the trainer's changes no other)
sources_hash() { git ls-files -z -- "$@" ':!:*Dockerfile' | xargs -0 cat | sha256sum | cut -c1-12; }

archive() { echo "$IMAGES/$1-$2.tar"; }

# import an archive into buildah's scratch storage, for a build FROM it
load() { # name tag
  local ref="localhost/isoflop-$1:$2"
  buildah inspect --type image "$ref" >/dev/null 2>&1 ||
    buildah pull -q "oci-archive:$(archive "$1" "$2")" >/dev/null
  buildah tag "$(buildah images -q --filter reference="$ref" | head -n 1)" "$ref" 2>/dev/null || true
  echo "$ref"
}

save() { # name tag: buildah's image -> archive, whole or not at all
  local ref="localhost/isoflop-$1:$2" out
  out="$(archive "$1" "$2")"
  rm -f "$out.part"
  buildah push -q "$ref" "oci-archive:$out.part:$ref" >/dev/null
  mv "$out.part" "$out"
  for older in "$IMAGES/$1"-*.tar; do  # one archive per image: the one its inputs hash to now
    [ "$older" = "$out" ] || rm -f "$older"
  done
  echo "build-images: $1 $ref $(du -h "$out" | cut -f1)B" >&2
}

mirror() { # this machine's Debian mirror, as apt has it
  sed -n 's/^URIs: *//p; s/^deb  *\(\[[^]]*\] *\)\{0,1\}\(http[^ ]*\) .*/\2/p' \
    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
    grep -v security | head -n 1
}

# ------------------------------------------------------------------------------------------------
BASE_TAG="$(echo "$SUITE python3 python3-pip passwd ca-certificates v1" | sha256sum | cut -c1-12)"
if [ ! -f "$(archive base "$BASE_TAG")" ]; then
  start=$(date +%s)
  work="$(mktemp -d "$IMAGES/.base-XXXX")"
  trap 'rm -rf "$work"' EXIT
  echo "build-images: debootstrap $SUITE from $(mirror)" >&2
  debootstrap --variant=minbase --include=python3,python3-pip,passwd,ca-certificates \
    "$SUITE" "$work/rootfs" "$(mirror)" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  # what python:3.11-slim offers a Dockerfile: `python` and `pip` that install system-wide
  rm -f "$work"/rootfs/usr/lib/python3*/EXTERNALLY-MANAGED
  ln -sf python3 "$work/rootfs/usr/bin/python"
  ln -sf pip3 "$work/rootfs/usr/bin/pip"
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
  ctr=$(buildah from scratch)
  tar -C "$work/rootfs" -cf "$work/rootfs.tar" .  # add extracts it, owners and modes kept
  buildah add "$ctr" "$work/rootfs.tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$ctr"
  buildah commit -q "$ctr" "localhost/isoflop-base:$BASE_TAG" >/dev/null
  buildah rm "$ctr" >/dev/null
  save base "$BASE_TAG"
  rm -rf "$work"
  trap - EXIT
  echo "build-images: base built in $(( $(date +%s) - start )) s" >&2
fi
echo "base localhost/isoflop-base:$BASE_TAG $(archive base "$BASE_TAG")"

# the sandbox ("pause") image every pod's network namespace is held by: the base's coreutils
PAUSE_TAG="$(echo "$BASE_TAG sleep-infinity" | sha256sum | cut -c1-12)"
if [ ! -f "$(archive pause "$PAUSE_TAG")" ]; then
  ctr=$(buildah from "$(load base "$BASE_TAG")")
  buildah config --entrypoint '["/bin/sleep", "infinity"]' --cmd '' "$ctr"
  buildah commit -q "$ctr" "localhost/isoflop-pause:$PAUSE_TAG" >/dev/null
  buildah rm "$ctr" >/dev/null
  save pause "$PAUSE_TAG"
fi
echo "pause localhost/isoflop-pause:$PAUSE_TAG $(archive pause "$PAUSE_TAG")"

TORCH_TAG="$(echo "$BASE_TAG torch==$TORCH" | sha256sum | cut -c1-12)"
if [ ! -f "$(archive torch "$TORCH_TAG")" ]; then
  start=$(date +%s)
  base=$(load base "$BASE_TAG")
  ctr=$(buildah from "$base")
  buildah run --network host "${TRUST[@]}" "$ctr" -- pip install --no-cache-dir -q "torch==$TORCH"
  buildah commit -q "$ctr" "localhost/isoflop-torch:$TORCH_TAG" >/dev/null
  buildah rm "$ctr" >/dev/null
  save torch "$TORCH_TAG"
  echo "build-images: torch built in $(( $(date +%s) - start )) s" >&2
fi
echo "torch localhost/isoflop-torch:$TORCH_TAG $(archive torch "$TORCH_TAG")"

build() { # name dockerfile base-name base-tag
  local name=$1 file=$2 tag
  tag="$(echo "$4 $(hash_of "$file") $(sources_hash pyproject.toml README.md operator trainer)" |
    sha256sum | cut -c1-12)"
  if [ ! -f "$(archive "$name" "$tag")" ]; then
    local start base
    start=$(date +%s)
    base=$(load "$3" "$4")
    buildah bud -q --network host "${TRUST[@]}" --layers=false --build-arg "BASE=$base" -f "$file" \
      -t "localhost/isoflop-$name:$tag" . >/dev/null
    save "$name" "$tag"
    echo "build-images: $name built in $(( $(date +%s) - start )) s" >&2
  fi
  echo "$name localhost/isoflop-$name:$tag $(archive "$name" "$tag")"
}

build operator operator/Dockerfile base "$BASE_TAG"
build trainer trainer/Dockerfile torch "$TORCH_TAG"

# the scratch storage goes; the archives stay
buildah rmi -a -f >/dev/null 2>&1 || true
