#!/usr/bin/env bash
# Idempotent setup of a fresh Debian 12 machine for PVC development, tests and the lab.
# Installs the Debian packages the code and the tests use, then a venv at .venv made from /usr/bin/python3 with
# --system-site-packages (python3-rados/rbd and python3-libvirt exist only as Debian packages), then this project.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  python3 python3-venv python3-pip python3-dev gcc pkg-config
  python3-rados python3-rbd python3-libvirt python3-psycopg2 python3-cryptography python3-defusedxml
  ceph-common ceph-mon ceph-mgr ceph-osd qemu-block-extra uuid-runtime
  zookeeper default-jre-headless libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
  ipmitool socat iproute2 procps wrk
  mmdebstrap squashfs-tools dosfstools mtools gdisk grub-efi-amd64-bin grub-pc-bin grub-common syslinux
  syslinux-common xorriso ovmf systemd-container ipxe-qemu ipxe dnsmasq-base openssh-client
  frr e2fsprogs util-linux libxml2-utils
  postgresql patroni python3-kazoo
  nftables gnutls-bin
)

export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
echo "== apt: ${#PACKAGES[@]} packages"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null

VENV=${PVC_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
  echo "== venv: $VENV"
  rm -rf "$VENV"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
echo "== pip install -e .[test]"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 'setuptools>=68' wheel
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
echo "== setup done"
