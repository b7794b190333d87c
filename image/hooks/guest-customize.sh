#!/bin/sh
# Guest base stage: runs inside the new root (chroot) after mmdebstrap installed the guest package set and synced
# in image/guest-rootfs, the shared ssh files and /etc/fstab (before the packages: their postinsts saw them).
set -eu
export DEBIAN_FRONTEND=noninteractive

# Off: timers that would run apt or scrub disks inside a test VM.
for unit in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service; do
    if [ -e "/usr/lib/systemd/system/$unit" ] || [ -e "/lib/systemd/system/$unit" ]; then
        systemctl disable "$unit" >/dev/null 2>&1 || true
    fi
done

# On: DHCP on every NIC and DNS (networkd + resolved; the search domain from DHCP on cloud-init's NICs too), sshd,
# the serial login, cloud-init's four stages.
systemctl enable systemd-networkd.service systemd-resolved.service pvc-dhcp-domains.service ssh.service \
    serial-getty@ttyS0.service cloud-init-local.service cloud-init.service cloud-config.service cloud-final.service >/dev/null 2>&1
ln -sf ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf

# Identity is per instance: no host keys (cloud-init makes them at first boot, sshd's drop-in if cloud-init did
# not run), a fresh machine-id at each first boot, cloud-init's hostname from the seed.
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
echo pvc-guest > /etc/hostname
rm -rf /var/lib/cloud/*

# No password login anywhere: root's password locked, keys only through cloud-init.
passwd -l root >/dev/null
rm -rf /root/.ssh

# Caches the image does not need.
rm -rf /var/cache/apt/archives/*.deb /var/cache/apt/*.bin /var/lib/apt/lists/* /tmp/* /var/tmp/*
