"""libvirt: libvirtd.conf and qemu.conf for a node (pure functions).

libvirtd listens on the node's cluster IP, unauthenticated, for peer-to-peer live migration between nodes: the
cluster network is private to the cluster (as in the original PVC). Migration traffic uses the same address.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import libvirt as libvirt_api

from pvc.config.schema import ClusterFile, Node
from pvc.nodeos.formation import units
from pvc.nodeos.formation.machinery import Context, doing, run, wait_for, write
from pvc.nodeos.storage import rbddisk  # the one definition of the client.libvirt secret (pvcd defines it too)


@dataclass(frozen=True)
class LibvirtParams:
    listen_address: str
    host_uuid: str
    run_as_root: bool = False  # component tests and hosts without the libvirt-qemu user
    tcp_port: int = 16509
    cgroups: bool = True  # False inside a container (the lab), whose cgroup controllers are read-only


def params_for(cfg: ClusterFile, node: Node, host_uuid: str) -> LibvirtParams:
    return LibvirtParams(listen_address=str(node.ip.cluster), host_uuid=host_uuid)


def render_libvirtd_conf(p: LibvirtParams) -> str:
    return "\n".join(
        [
            'unix_sock_group = "root"',
            'unix_sock_rw_perms = "0770"',
            'auth_unix_rw = "none"',
            'auth_unix_ro = "none"',
            "listen_tls = 0",
            "listen_tcp = 1",
            f'listen_addr = "{p.listen_address}"',
            f'tcp_port = "{p.tcp_port}"',
            'auth_tcp = "none"',
            f'host_uuid = "{p.host_uuid}"',
            'log_outputs = "3:journald"',  # bounded by journald's limits (image/rootfs journald.conf.d)
            "",
        ]
    )


def render_qemu_conf(p: LibvirtParams) -> str:
    lines = [
        f'migration_address = "{p.listen_address}"',
        f'migration_host = "{p.listen_address}"',
        'stdio_handler = "file"',
    ]
    if not p.cgroups:
        lines.append("cgroup_controllers = [ ]")
    if p.run_as_root:
        lines += [
            'user = "root"',
            'group = "root"',
            "dynamic_ownership = 0",
            "remember_owner = 0",
            'security_driver = "none"',
        ]
    return "\n".join(lines) + "\n"


def host_uuid(fsid: str, node_name: str) -> str:
    """A stable, per-node libvirt host UUID (live migration refuses two hosts with the same one)."""
    return str(uuid.uuid5(uuid.UUID(fsid), f"libvirt-host/{node_name}"))


def in_container() -> bool:
    return (
        subprocess.run(["systemd-detect-virt", "--container", "--quiet"], capture_output=True, timeout=30).returncode
        == 0
    )


# -- on the node ---------------------------------------------------------------------------------------------------
UNIT = "pvc-libvirtd.service"
URI = "qemu:///system"
DEADLINE = 600.0  # seconds for the whole step (docs/formation.md, "Deadlines")
RESTART_AFTER = 240.0  # seconds without an answer before libvirtd is restarted, once (a probe that never returns)


def step(ctx: Context) -> str:
    p = params_for(ctx.cfg, ctx.node, host_uuid(ctx.secrets.ceph_fsid, ctx.node.name))
    if in_container():
        p = dataclasses.replace(p, cgroups=False)
    changed = write("/etc/libvirt/libvirtd.conf", render_libvirtd_conf(p))
    changed |= write("/etc/libvirt/qemu.conf", render_qemu_conf(p))
    Path("/var/log/libvirt/qemu").mkdir(parents=True, exist_ok=True)
    unit = units.render(
        "PVC libvirt daemon", ["/usr/sbin/libvirtd", "--listen", "-f", "/etc/libvirt/libvirtd.conf"], limit_nofile=8192
    )
    changed |= units.install(UNIT, unit)
    units.ensure_running(UNIT, changed)

    started, restarted = time.monotonic(), False

    def answers() -> bool:
        nonlocal restarted
        units.check_alive(UNIT)
        if not restarted and time.monotonic() - started > RESTART_AFTER:
            # libvirtd waits on each QEMU capability probe with no deadline of its own: a probe that never returns
            # holds every caller; a restart ends it (running VMs survive a libvirtd restart)
            restarted = True
            ctx.say(f"libvirt: libvirtd has not answered in {RESTART_AFTER:.0f} s: restarting it once")
            run("systemctl", "restart", UNIT, timeout=120)
        run("virsh", "-c", URI, "version", timeout=60)
        return True

    # `virsh version` answers once libvirtd has probed QEMU's capabilities: at its first start on a node (the result
    # is cached on PVCDATA, data.BINDS) that takes 5-30 s under TCG (docs/formation.md), a few on real hardware
    wait_for("libvirtd to answer (it probes QEMU's capabilities first)", answers, DEADLINE, 2.0, log=_journal)
    sid = define_ceph_secret(ctx.join_key)
    return f"listening on {p.listen_address}:{p.tcp_port}, Ceph secret {sid}"


def define_ceph_secret(join_key: str, uri: str = URI) -> str:
    """The client.libvirt secret, defined through libvirt. These calls run in libvirt's C library and cannot be
    interrupted from Python: the step's deadline (machinery.run_step) bounds them, naming this activity."""
    with doing(f"defining the client.libvirt secret through libvirt ({uri})"):
        conn = libvirt_api.open(uri)
        try:
            return rbddisk.define_secret(conn, join_key)
        finally:
            conn.close()


def _journal() -> str:
    return units.journal(UNIT)
