#!/usr/bin/env bash
# Prepare this Debian 12 machine (as root) to run provision and its tests: system packages,
# the libvirt daemons (started by hand: there may be no systemd), and a virtualenv with the tool.
# Idempotent: safe to run before every command.
set -euo pipefail
cd "$(dirname "$0")"

packages=(
  qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev pkg-config
  mmdebstrap e2fsprogs openssh-server openssh-client cloud-init shellcheck
  python3 python3-venv python3-dev gcc procps
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Never start libvirt's `default` network (it would bring up 192.168.122.0/24): only loopback here.
if [ -e /etc/libvirt/qemu/networks/autostart/default.xml ]; then
  rm -f /etc/libvirt/qemu/networks/autostart/default.xml
fi
# Without udev nothing gives /dev/kvm Debian's usual root:kvm 0660. libvirt then finds KVM in
# QEMU's cached capabilities but not usable by its QEMU user, drops the cache and re-probes QEMU
# on every call (80 s per `define` on this machine). Guests here still run under TCG.
if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 50); do [ -S /run/libvirt/libvirt-sock ] && break; sleep 0.2; done
virsh -c qemu:///system version >/dev/null

if [ ! -x .venv/bin/provision ] || [ pyproject.toml -nt .venv/.installed ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch .venv/.installed
fi
echo "setup: ready (.venv/bin/provision, libvirtd running)" >&2
