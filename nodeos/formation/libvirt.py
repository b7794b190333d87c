"""libvirt: libvirtd.conf, qemu.conf and the node's TLS files (pure functions), and the formation step.

libvirtd listens on the node's cluster IP over TLS only (never plain TCP), for peer-to-peer live migration between
nodes. The client certificate is the authentication: libvirtd admits exactly the cluster's node certificates
(`tls_allowed_dn_list`), each issued by the cluster CA that every node derives from the join key (pvc.config.pki).
QEMU's migration stream is TLS too, with a separate "migration" certificate: QEMU runs as an unprivileged user that
must read its key, so that key is not one libvirtd trusts. docs/security.md has the whole picture.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import libvirt as libvirt_api

from pvc.config.pki import NodePki, node_dns, node_pki
from pvc.config.schema import ClusterFile, Node
from pvc.nodeos.formation import units
from pvc.nodeos.formation.machinery import Context, doing, run, wait_for, write
from pvc.nodeos.storage import rbddisk  # the one definition of the client.libvirt secret (pvcd defines it too)

TLS_PORT = 16514  # libvirtd's TLS port (qemu+tls://)
MIGRATION_PORTS = (49152, 49215)  # QEMU's incoming migration ports (qemu.conf migration_port_min/max)
PKI_DIR = "/etc/pki"  # libvirt's fixed client paths live here; the server paths and QEMU's are set to match
QEMU_GROUP = "libvirt-qemu"  # Debian's QEMU group: it reads the migration key


@dataclass(frozen=True)
class LibvirtParams:
    listen_address: str
    host_uuid: str
    allowed_dns: tuple[str, ...] = ()  # the client certificates libvirtd admits: the cluster's node certificates
    run_as_root: bool = False  # component tests and hosts without the libvirt-qemu user
    tls_port: int = TLS_PORT
    migration_ports: tuple[int, int] = MIGRATION_PORTS
    migrate_tls: bool = True  # QEMU's migration stream over TLS (VIR_MIGRATE_TLS), and required
    pki_dir: str = PKI_DIR
    cgroups: bool = True  # False inside a container (the lab), whose cgroup controllers are read-only


def params_for(cfg: ClusterFile, node: Node, host_uuid: str) -> LibvirtParams:
    return LibvirtParams(listen_address=str(node.ip.cluster), host_uuid=host_uuid, allowed_dns=tuple(node_dns(cfg)))


def _quoted_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items) + "]"


def render_libvirtd_conf(p: LibvirtParams) -> str:
    if not p.allowed_dns:
        raise ValueError("libvirtd over TLS needs the node certificates it admits (allowed_dns)")
    return "\n".join(
        [
            'unix_sock_group = "root"',
            'unix_sock_rw_perms = "0770"',
            'auth_unix_rw = "none"',
            'auth_unix_ro = "none"',
            "listen_tcp = 0",
            "listen_tls = 1",
            f'listen_addr = "{p.listen_address}"',
            f'tls_port = "{p.tls_port}"',
            'auth_tls = "none"',  # the client certificate, checked against the CA and the list below, is the auth
            "tls_no_verify_certificate = 0",
            "tls_no_sanity_certificate = 0",
            f"tls_allowed_dn_list = {_quoted_list(p.allowed_dns)}",
            f'ca_file = "{p.pki_dir}/{PKI_FILES["ca"]}"',
            f'cert_file = "{p.pki_dir}/{PKI_FILES["server_cert"]}"',
            f'key_file = "{p.pki_dir}/{PKI_FILES["server_key"]}"',
            f'host_uuid = "{p.host_uuid}"',
            'log_outputs = "3:journald"',  # bounded by journald's limits (image/rootfs journald.conf.d)
            "",
        ]
    )


def render_qemu_conf(p: LibvirtParams) -> str:
    lines = [
        f'migration_address = "{p.listen_address}"',
        f'migration_host = "{p.listen_address}"',
        f"migration_port_min = {p.migration_ports[0]}",
        f"migration_port_max = {p.migration_ports[1]}",
        'stdio_handler = "file"',
        f'default_tls_x509_cert_dir = "{p.pki_dir}/qemu"',
        "default_tls_x509_verify = 1",
        f'migrate_tls_x509_cert_dir = "{p.pki_dir}/qemu"',
        "migrate_tls_x509_verify = 1",  # the target QEMU checks the source's certificate too
    ]
    if p.migrate_tls:
        lines.append("migrate_tls_force = 1")  # libvirt refuses a migration without VIR_MIGRATE_TLS
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


# Where libvirt and QEMU look for them, relative to PKI_DIR. libvirt's client side (libvirtd dialling another node
# for a peer-to-peer migration, virsh) has fixed paths: CA/cacert.pem and libvirt/{clientcert,private/clientkey}.pem.
PKI_FILES = {
    "ca": "CA/cacert.pem",
    "server_cert": "libvirt/servercert.pem",
    "server_key": "libvirt/private/serverkey.pem",
    "client_cert": "libvirt/clientcert.pem",
    "client_key": "libvirt/private/clientkey.pem",
}


@dataclass(frozen=True)
class PkiFile:
    path: str  # relative to PKI_DIR
    text: str
    mode: int
    group: str = "root"


def render_pki(pki: NodePki, qemu_group: str = QEMU_GROUP) -> list[PkiFile]:
    """The node's TLS files: its node identity for libvirtd (server and client), its migration identity for QEMU
    (server and client of the migration stream, readable by QEMU's group), and the CA certificate for both."""
    files = [
        PkiFile(PKI_FILES["ca"], pki.ca_pem, 0o644),
        PkiFile(PKI_FILES["server_cert"], pki.node.cert_pem, 0o644),
        PkiFile(PKI_FILES["server_key"], pki.node.key_pem, 0o600),
        PkiFile(PKI_FILES["client_cert"], pki.node.cert_pem, 0o644),
        PkiFile(PKI_FILES["client_key"], pki.node.key_pem, 0o600),
        PkiFile("qemu/ca-cert.pem", pki.ca_pem, 0o644),
    ]
    for end in ("server", "client"):
        files += [
            PkiFile(f"qemu/{end}-cert.pem", pki.migration.cert_pem, 0o644),
            PkiFile(f"qemu/{end}-key.pem", pki.migration.key_pem, 0o640, qemu_group),
        ]
    return files


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


def write_pki(files: list[PkiFile], root: str | Path = PKI_DIR) -> bool:
    """Write the TLS files under `root`; True if one changed. Private folders are 0700, others 0755."""
    changed = False
    for f in files:
        path = Path(root) / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700 if path.parent.name == "private" else 0o755)
        changed |= write(path, f.text, f.mode, group=f.group)
    return changed


def step(ctx: Context) -> str:
    p = params_for(ctx.cfg, ctx.node, host_uuid(ctx.secrets.ceph_fsid, ctx.node.name))
    if in_container():
        p = dataclasses.replace(p, cgroups=False)
    changed = write_pki(render_pki(node_pki(ctx.join_key, ctx.cfg, ctx.node)))
    changed |= write("/etc/libvirt/libvirtd.conf", render_libvirtd_conf(p))
    changed |= write("/etc/libvirt/qemu.conf", render_qemu_conf(p))
    Path("/var/log/libvirt/qemu").mkdir(parents=True, exist_ok=True)
    unit = units.render(
        "PVC libvirt daemon", ["/usr/sbin/libvirtd", "--listen", "-f", "/etc/libvirt/libvirtd.conf"], limit_nofile=8192
    )
    changed |= units.install(UNIT, unit)
    units.ensure_running(UNIT, changed)
    tls_uri = f"qemu+tls://{p.listen_address}/system"

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
        run("virsh", "-c", tls_uri, "version", timeout=60)  # the node's own certificate, through TLS
        return True

    # `virsh version` answers once libvirtd has probed QEMU's capabilities: at its first start on a node (the result
    # is cached on PVCDATA, data.BINDS) that takes 5-30 s under TCG (docs/formation.md), a few on real hardware
    wait_for(
        "libvirtd to answer on its unix socket and through TLS (it probes QEMU's capabilities first)",
        answers,
        DEADLINE,
        2.0,
        log=_journal,
    )
    sid = define_ceph_secret(ctx.join_key)
    return f"TLS on {p.listen_address}:{p.tls_port}, Ceph secret {sid}"


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
