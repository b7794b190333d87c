"""libvirt: libvirtd.conf and qemu.conf for a node (pure functions).

libvirtd listens on the node's cluster IP, unauthenticated, for peer-to-peer live migration between nodes: the
cluster network is private to the cluster (as in the original PVC). Migration traffic uses the same address.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from pvc.config.schema import ClusterFile, Node
from pvc.nodeos.formation import units
from pvc.nodeos.formation.steps import Context, run, wait_for, write


@dataclass(frozen=True)
class LibvirtParams:
    listen_address: str
    host_uuid: str
    run_as_root: bool = False  # component tests and hosts without the libvirt-qemu user
    tcp_port: int = 16509


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
            'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"',
            "",
        ]
    )


def render_qemu_conf(p: LibvirtParams) -> str:
    lines = [
        f'migration_address = "{p.listen_address}"',
        f'migration_host = "{p.listen_address}"',
        'stdio_handler = "file"',
    ]
    if p.run_as_root:
        lines += [
            'user = "root"',
            'group = "root"',
            "dynamic_ownership = 0",
            "remember_owner = 0",
            'security_driver = "none"',
        ]
    return "\n".join(lines) + "\n"


def render_ceph_secret(secret_uuid: str) -> str:
    """The libvirt secret that holds client.libvirt's Ceph key; RBD disks name it by UUID."""
    return (
        "<secret ephemeral='no' private='yes'>\n"
        f"  <uuid>{secret_uuid}</uuid>\n"
        "  <usage type='ceph'><name>client.libvirt</name></usage>\n"
        "</secret>\n"
    )


def host_uuid(fsid: str, node_name: str) -> str:
    """A stable, per-node libvirt host UUID (live migration refuses two hosts with the same one)."""
    return str(uuid.uuid5(uuid.UUID(fsid), f"libvirt-host/{node_name}"))


# -- on the node ---------------------------------------------------------------------------------------------------
UNIT = "pvc-libvirtd.service"


def step(ctx: Context) -> str:
    p = params_for(ctx.cfg, ctx.node, host_uuid(ctx.secrets.ceph_fsid, ctx.node.name))
    changed = write("/etc/libvirt/libvirtd.conf", render_libvirtd_conf(p))
    changed |= write("/etc/libvirt/qemu.conf", render_qemu_conf(p))
    Path("/var/log/libvirt/qemu").mkdir(parents=True, exist_ok=True)
    unit = units.render(
        "PVC libvirt daemon", ["/usr/sbin/libvirtd", "--listen", "-f", "/etc/libvirt/libvirtd.conf"], limit_nofile=8192
    )
    changed |= units.install(UNIT, unit)
    units.ensure_running(UNIT, changed)

    def answers() -> bool:
        units.check_alive(UNIT)
        run("virsh", "-c", "qemu:///system", "version", timeout=30)
        return True

    wait_for("libvirtd to answer", answers, 180, 1.0, log=lambda: units.journal(UNIT))
    sid = ctx.secrets.libvirt_secret_uuid
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(render_ceph_secret(sid))
        f.flush()
        run("virsh", "-c", "qemu:///system", "secret-define", f.name)
    run(
        "virsh",
        "-c",
        "qemu:///system",
        "secret-set-value",
        "--secret",
        sid,
        "--base64",
        ctx.secrets.ceph_keys["client.libvirt"],
    )
    return f"listening on {p.listen_address}:{p.tcp_port}, Ceph secret {sid}"
