#!/bin/sh
# Base stage: runs inside the new root (chroot) after mmdebstrap installed the node package set.
# The packages' own services stay off: `pvc-node boot` renders and starts every service through its own units.
set -eu
export DEBIAN_FRONTEND=noninteractive

# Services and timers package postinsts enabled: disabled, and any wants/ link left under the name removed (some
# postinsts link by hand, and `systemctl disable` of an alias keeps the real name's links). chrony and ssh stay.
for unit in \
    postgresql.service patroni.service frr.service \
    libvirtd.service libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket libvirtd-tcp.socket libvirtd-tls.socket \
    libvirt-guests.service virtlogd.service virtlogd.socket virtlogd-admin.socket \
    virtlockd.service virtlockd.socket virtlockd-admin.socket \
    zookeeper.service dnsmasq.service \
    ceph.target ceph-mon.target ceph-mgr.target ceph-osd.target ceph-mds.target ceph-crash.service \
    ceph-fuse.target ceph-radosgw.target ceph-rbd-mirror.target \
    smartmontools.service smartd.service rbdmap.service \
    nvmf-autoconnect.service nvmefc-boot-connections.service \
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
    systemd-networkd-wait-online.service; do
    if [ -e "/usr/lib/systemd/system/$unit" ] || [ -e "/etc/systemd/system/$unit" ]; then
        systemctl disable "$unit" >/dev/null 2>&1 || true
    fi
    find /etc/systemd/system \( -path '*.wants/*' -o -path '*.requires/*' \) -name "$unit" -delete
done
find /etc/systemd/system \( -path '*.wants/*' -o -path '*.requires/*' \) \( -name 'ceph*' -o -name 'libvirt*' \
    -o -name 'virtlog*' -o -name 'virtlock*' -o -name 'postgresql*' -o -name 'patroni*' -o -name 'zookeeper*' \
    -o -name 'frr*' -o -name 'dnsmasq*' \) -delete

systemctl enable ssh.service chrony.service systemd-networkd.service logrotate.timer >/dev/null 2>&1

# Identity is per node and per boot: no baked host keys, machine-id, journal or build-host DNS.
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -rf /var/log/journal
rm -f /etc/resolv.conf
: > /etc/resolv.conf
echo pvc-node > /etc/hostname

# Root: locked password, no authorized keys, and sshd refuses it (PermitRootLogin no). Administrators log in as
# the [[users]] of cluster.toml; those with sudo = true may become root (docs/security.md, break-glass).
passwd -l root >/dev/null
rm -rf /root/.ssh

# The API's workers run as this unprivileged user (docs/security.md, M9); formation gives it its files.
id -u pvc-api >/dev/null 2>&1 || useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin pvc-api

# Caches the image does not need.
rm -rf /var/cache/apt/archives/*.deb /var/lib/apt/lists/* /tmp/* /var/tmp/*
