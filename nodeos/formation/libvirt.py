"""libvirt: libvirtd.conf and qemu.conf for a node (pure functions).

libvirtd listens on the node's cluster IP, unauthenticated, for peer-to-peer live migration between nodes: the
cluster network is private to the cluster (as in the original PVC). Migration traffic uses the same address.
"""

from __future__ import annotations

from dataclasses import dataclass

from pvc.config.schema import ClusterFile, Node


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
