"""A real libvirtd per simulated node: in the node's network namespace, in a private mount namespace whose
/etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt and /etc/pki are this node's
folders (feasibility-services.md §3). The product's renderers write libvirtd.conf, qemu.conf and the node's TLS
files (its certificates from the cluster CA), so nodes talk to each other over TLS as on real nodes."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from pvc.config.pki import node_pki
from pvc.config.schema import ClusterFile, Node
from pvc.nodeos.formation import libvirt as lvform

DIRS = ("etc", "run", "lib", "log", "cache", "pki")


MOUNT_POINTS = (
    "/etc/libvirt",
    "/run/libvirt",
    "/var/lib/libvirt",
    "/var/log/libvirt",
    "/var/cache/libvirt",
    lvform.PKI_DIR,
)


def prepare(root: Path, cfg: ClusterFile, node: Node, join_key: str, cache_from: Path | None) -> Path:
    name = node.name
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
    params = dataclasses.replace(lvform.params_for(cfg, node, host_uuid), run_as_root=True)
    conf = lvform.render_libvirtd_conf(params)  # a node logs to the journal; here there is none: a file of the root's
    assert 'log_outputs = "3:journald"' in conf
    (root / "etc" / "libvirtd.conf").write_text(
        conf.replace('log_outputs = "3:journald"', f'log_outputs = "3:file:{root / "log" / "libvirtd.log"}"')
    )
    (root / "etc" / "qemu.conf").write_text(lvform.render_qemu_conf(params))
    lvform.write_pki(lvform.render_pki(node_pki(join_key, cfg, node), qemu_group="root"), root / "pki")
    client = root / "pki-client"  # what pvcd's own TLS connections use (it does not run in this mount namespace)
    client.mkdir(mode=0o700, exist_ok=True)
    for name, key in (("cacert.pem", "ca"), ("clientcert.pem", "client_cert"), ("clientkey.pem", "client_key")):
        shutil.copy2(root / "pki" / lvform.PKI_FILES[key], client / name)
    return root


def migration_uri(root: Path) -> str:
    """pvcd's `--migration-uri` on this node: TLS as on a node, with this node's client certificate from a folder
    of its own (libvirt's pkipath), since pvcd runs outside libvirtd's mount namespace where /etc/pki is the
    node's. libvirtd dials the same URI for a peer-to-peer migration: the folder is on the host, which it sees."""
    return f"qemu+tls://{{ip}}/system?pkipath={root / 'pki-client'}"


def command(root: Path, name: str) -> list[str]:
    mounts = " && ".join(f"mount --bind {root / d} {target}" for d, target in zip(DIRS, MOUNT_POINTS, strict=True))
    script = f"hostname {name} && {mounts} && exec libvirtd --listen --pid-file {root}/libvirtd.pid"
    return ["unshare", "-m", "-u", "--propagation", "private", "sh", "-c", script]


def socket_uri(root: Path) -> str:
    return f"qemu:///system?socket={root}/run/libvirt-sock"


def restart(root: Path, name: str, log: Path) -> None:
    """Kill this node's libvirtd (by its pid file) and start a new one, detached: what pvcd's libvirtd restart
    command does in the component tests (`systemctl restart pvc-libvirtd.service` on a node). Its QEMUs live on."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((root / "libvirtd.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    (root / "run" / "libvirt-sock").unlink(missing_ok=True)  # left by the killed one: wait for the new one's
    with open(log, "ab") as out:
        subprocess.Popen(
            command(root, name), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + 30
    while not (root / "run" / "libvirt-sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


if __name__ == "__main__":  # python -m tests.harness.libvirtd restart ROOT NAME LOG
    if sys.argv[1:2] == ["restart"] and len(sys.argv) == 5:
        restart(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
    else:
        sys.exit("usage: python -m tests.harness.libvirtd restart ROOT NAME LOG")
