"""A real libvirtd per simulated node: in the node's network namespace, in a private mount namespace whose
/etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt are this node's folders
(feasibility-services.md §3). The product's renderer writes libvirtd.conf and qemu.conf."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from pvc.nodeos.formation import libvirt as lvform

DIRS = ("etc", "run", "lib", "log", "cache")


MOUNT_POINTS = ("/etc/libvirt", "/run/libvirt", "/var/lib/libvirt", "/var/log/libvirt", "/var/cache/libvirt")


def prepare(root: Path, name: str, listen: str, cache_from: Path | None) -> Path:
    for target in MOUNT_POINTS:  # bind-mount targets must exist on the host
        Path(target).mkdir(parents=True, exist_ok=True)
    for d in DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copytree("/etc/libvirt", root / "etc", dirs_exist_ok=True)
    for autostart in (root / "etc" / "qemu" / "networks" / "autostart").glob("*"):
        autostart.unlink()
    if cache_from is not None and cache_from.exists():
        shutil.copytree(cache_from, root / "cache", dirs_exist_ok=True)
    host_uuid = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.pvc-component"))
    params = lvform.LibvirtParams(listen_address=listen, host_uuid=host_uuid, run_as_root=True)
    (root / "etc" / "libvirtd.conf").write_text(lvform.render_libvirtd_conf(params))
    (root / "etc" / "qemu.conf").write_text(lvform.render_qemu_conf(params))
    return root


def command(root: Path, name: str) -> list[str]:
    mounts = " && ".join(
        f"mount --bind {root / d} {target}"
        for d, target in zip(
            DIRS,
            ("/etc/libvirt", "/run/libvirt", "/var/lib/libvirt", "/var/log/libvirt", "/var/cache/libvirt"),
            strict=True,
        )
    )
    script = f"hostname {name} && {mounts} && exec libvirtd --listen --pid-file {root}/libvirtd.pid"
    return ["unshare", "-m", "-u", "--propagation", "private", "sh", "-c", script]


def socket_uri(root: Path) -> str:
    return f"qemu:///system?socket={root}/run/libvirt-sock"
