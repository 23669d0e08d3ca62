#!/usr/bin/env bash
# Installs what building, running and testing krust needs on Debian 12 (see HOST.md):
# the Debian packages below, the official Kubernetes Python client, and cargo-nextest.
#
# Idempotent and quick when everything is there: `apt-get update` runs only when a
# package is missing, and only the missing packages are installed. Run as root (or
# with sudo available).
set -euo pipefail

APT_PACKAGES=(
  containerd runc crun containernetworking-plugins busybox-static
  iptables nftables conntrack skopeo umoci docker-registry
  etcd-server etcd-client protobuf-compiler libprotobuf-dev iproute2
)

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root to run: $*; run this script as root"
  fi
}

is_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

updated=0
apt_update_once() {
  if [ "$updated" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    updated=1
  fi
}

# 1. Debian packages.
command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script is for Debian 12"
missing=()
for package in "${APT_PACKAGES[@]}"; do
  is_installed "$package" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  apt_update_once
  apt_install "${missing[@]}"
fi

# 2. The Kubernetes Python client (for black-box tests with a third client).
if ! python3 -c 'import kubernetes' >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    log "installing python3-pip"
    apt_update_once
    apt_install python3-pip
  fi
  log "pip install kubernetes"
  # Debian's own Python refuses pip installs outside a venv (PEP 668) unless told.
  python3 -m pip install --quiet kubernetes 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages kubernetes
  python3 -c 'import kubernetes' || die "the kubernetes Python package is still not importable"
fi

# 3. cargo-nextest (usually preinstalled in /usr/local/bin).
if ! command -v cargo-nextest >/dev/null 2>&1; then
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup) first"
  log "cargo install cargo-nextest"
  cargo install --locked cargo-nextest
fi

log "all dependencies present"
