"""Ceph: ceph.conf, keyrings and the monmap command, rendered from cluster.toml and the derived secrets (pure).

Every coordinator renders the same monmap (same fsid, same mon names and storage IPs) and the same mon. keyring,
so the mons form a quorum without a bootstrap leader (DESIGN.md, decision 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pvc.config.schema import ClusterFile
from pvc.config.secrets import ClusterSecrets

MON_PORT = 6789
MON_V2_PORT = 3300

CAPS = {
    "mon.": {"mon": "allow *"},
    "client.admin": {"mds": "allow *", "mgr": "allow *", "mon": "allow *", "osd": "allow *"},
    "client.bootstrap-osd": {"mgr": "allow r", "mon": "profile bootstrap-osd"},
    "client.libvirt": {"mon": "profile rbd", "osd": "profile rbd", "mgr": "profile rbd"},
}
MGR_CAPS = {"mds": "allow *", "mon": "allow profile mgr", "osd": "allow *"}


@dataclass(frozen=True)
class CephParams:
    fsid: str
    mons: list[tuple[str, str]]  # (name, address)
    public_network: str
    osd_memory_target: int = 4 * 1024**3
    pool_size: int = 3
    pool_min_size: int = 2
    pg_num: int = 32
    mon_port: int = MON_PORT
    mon_v2_port: int = MON_V2_PORT
    # paths: the defaults are Ceph's; component tests put everything under one folder
    run_dir: str = "/run/ceph"
    data_root: str = "/var/lib/ceph"
    log_dir: str = "/var/log/ceph"
    keyring_dir: str = "/etc/ceph"
    extra: dict[str, str] = field(default_factory=dict)  # [global] options for labs and tests


def params_for(cfg: ClusterFile, secrets: ClusterSecrets) -> CephParams:
    return CephParams(
        fsid=secrets.ceph_fsid,
        mons=[(n.name, str(cfg.storage_ip(n))) for n in cfg.coordinators],
        public_network=str(cfg.storage_network.subnet),
        osd_memory_target=cfg.ceph.osd_memory_target,
        pool_size=cfg.ceph.pool_defaults.size,
        pool_min_size=cfg.ceph.pool_defaults.min_size,
        pg_num=cfg.ceph.pool_defaults.pgs,
    )


def mon_addr(p: CephParams, address: str) -> str:
    return f"[v2:{address}:{p.mon_v2_port},v1:{address}:{p.mon_port}]"


def render_conf(p: CephParams) -> str:
    lines = [
        "[global]",
        f"fsid = {p.fsid}",
        "mon initial members = " + ", ".join(name for name, _ in p.mons),
        "mon host = " + ",".join(mon_addr(p, addr) for _, addr in p.mons),
        f"public network = {p.public_network}",
        "auth cluster required = cephx",
        "auth service required = cephx",
        "auth client required = cephx",
        "auth allow insecure global id reclaim = false",
        f"osd pool default size = {p.pool_size}",
        f"osd pool default min size = {p.pool_min_size}",
        f"osd pool default pg num = {p.pg_num}",
        f"osd pool default pgp num = {p.pg_num}",
        "osd pool default pg autoscale mode = off",
        f"osd memory target = {p.osd_memory_target}",
        "mon allow pool delete = true",  # PVC asks for an explicit confirmation itself
        "ms bind ipv6 = false",
        f"run dir = {p.run_dir}",
        "admin socket = $run_dir/$cluster-$name.asok",
        f"log file = {p.log_dir}/$cluster-$name.log",
        "pid file = $run_dir/$cluster-$name.pid",
    ]
    lines += [f"{key} = {value}" for key, value in p.extra.items()]
    lines += [
        "",
        "[client]",
        f"keyring = {p.keyring_dir}/$cluster.$name.keyring",
        "",
        "[mon]",
        f"mon data = {p.data_root}/mon/$cluster-$id",
        "",
        "[mgr]",
        f"mgr data = {p.data_root}/mgr/$cluster-$id",
        "keyring = $mgr_data/keyring",
        "mgr disabled modules = dashboard",
        "",
        "[osd]",
        f"osd data = {p.data_root}/osd/$cluster-$id",
        "keyring = $osd_data/keyring",
        "",
    ]
    return "\n".join(lines)


def render_keyring(keys: dict[str, str], caps: dict[str, dict[str, str]]) -> str:
    """A keyring in Ceph's INI format, for the given entities (entity -> key)."""
    out = []
    for entity, key in keys.items():
        out += [f"[{entity}]", f"\tkey = {key}"]
        out += [f'\tcaps {kind} = "{cap}"' for kind, cap in sorted(caps.get(entity, {}).items())]
    return "\n".join(out) + "\n"


def mon_keyring(secrets: ClusterSecrets) -> str:
    """What `ceph-mon --mkfs` needs: mon. plus the admin and bootstrap keys it will know from the start."""
    entities = ["mon.", "client.admin", "client.bootstrap-osd", "client.libvirt"]
    keys = {e: secrets.ceph_keys[e] for e in entities}
    keys.update({e: k for e, k in secrets.ceph_keys.items() if e.startswith("mgr.")})
    caps = {**CAPS, **{e: MGR_CAPS for e in keys if e.startswith("mgr.")}}
    return render_keyring(keys, caps)


def monmaptool_args(p: CephParams, path: str) -> list[str]:
    args = ["monmaptool", "--create", "--fsid", p.fsid, "--clobber"]
    for name, addr in p.mons:
        args += ["--addv", name, mon_addr(p, addr)]
    return [*args, path]
