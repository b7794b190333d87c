"""Ceph: ceph.conf, keyrings and the monmap command, rendered from cluster.toml and the derived secrets (pure).

Every coordinator renders the same monmap (same fsid, same mon names and storage IPs) and the same mon. keyring,
so the mons form a quorum without a bootstrap leader (DESIGN.md, decision 6). The daemons run as the `ceph` user:
they start as root, drop to ceph:ceph at once (--setuser/--setgroup), and own their data folders, keyrings, logs and
OSD devices.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvc.config.schema import ClusterFile, OsdDisk
from pvc.config.secrets import ClusterSecrets
from pvc.nodeos.boot import disks, probe
from pvc.nodeos.formation import units
from pvc.nodeos.formation.machinery import Context, StepFailed, bounded, doing, run, wait_for, write
from pvc.nodeos.state.store import Conflict

MON_PORT = 6789
MON_V2_PORT = 3300
DAEMON_PORTS = (6800, 7300)  # OSDs and mgrs bind here (ms bind port min/max: Ceph's defaults, rendered explicitly)

CAPS = {
    "mon.": {"mon": "allow *"},
    "client.admin": {"mds": "allow *", "mgr": "allow *", "mon": "allow *", "osd": "allow *"},
    "client.bootstrap-osd": {"mgr": "allow r", "mon": "profile bootstrap-osd"},
    "client.libvirt": {"mon": "profile rbd", "osd": "profile rbd", "mgr": "profile rbd"},
}
MGR_CAPS = {"mds": "allow *", "mon": "allow profile mgr", "osd": "allow *"}
USER = "ceph"  # Debian's ceph user and group: every daemon runs as it


def daemon_argv(kind: str, conf: str, ident: str) -> list[str]:
    """The foreground command of a Ceph daemon (`kind` mon, mgr or osd), dropping to the ceph user."""
    return [f"ceph-{kind}", "-f", "-c", conf, "-i", ident, "--setuser", USER, "--setgroup", USER]


def chown_argv(*paths: str | Path, recursive: bool = True) -> list[str]:
    """Give paths (a symlink's target, for a device) to the ceph user."""
    return ["chown", *(["-R"] if recursive else []), f"{USER}:{USER}", *map(str, paths)]


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
    daemon_ports: tuple[int, int] = DAEMON_PORTS
    # paths: the defaults are Ceph's; component tests put everything under one folder
    run_dir: str = "/run/ceph"
    data_root: str = "/var/lib/ceph"
    log_dir: str = "/var/log/ceph"
    keyring_dir: str = "/etc/ceph"
    # True on nodes: the daemons log to stderr, which systemd puts in the journal (bounded; docs/storage.md "Logs"),
    # and nothing writes files under log_dir. Component tests keep files they can read.
    journal: bool = False
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
        journal=True,
    )


JOURNAL_GLOBAL = ("log to file = false", "mon cluster log to file = false")
JOURNAL_DAEMON = ("log to stderr = true", "err to stderr = true")


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
        f"ms bind port min = {p.daemon_ports[0]}",
        f"ms bind port max = {p.daemon_ports[1]}",
        f"run dir = {p.run_dir}",
        "admin socket = $run_dir/$cluster-$name.asok",
        f"log file = {p.log_dir}/$cluster-$name.log",
        "pid file = $run_dir/$cluster-$name.pid",
    ]
    daemon = list(JOURNAL_DAEMON) if p.journal else []
    lines += list(JOURNAL_GLOBAL) if p.journal else []
    lines += [f"{key} = {value}" for key, value in p.extra.items()]
    lines += [
        "",
        "[client]",
        f"keyring = {p.keyring_dir}/$cluster.$name.keyring",
        "admin socket = $run_dir/$cluster-$name.$pid.$cctid.asok",  # several clients run at once
        "",
        "[mon]",
        f"mon data = {p.data_root}/mon/$cluster-$id",
        *daemon,
        *(["mon cluster log to stderr = true"] if p.journal else []),
        "",
        "[mgr]",
        f"mgr data = {p.data_root}/mgr/$cluster-$id",
        "keyring = $mgr_data/keyring",
        "mgr disabled modules = dashboard",
        *daemon,
        "",
        "[osd]",
        f"osd data = {p.data_root}/osd/$cluster-$id",
        "keyring = $osd_data/keyring",
        *daemon,
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


def mon_mkfs_args(conf: str, name: str, monmap: Path, keyring: Path) -> list[str]:
    """`ceph-mon --mkfs`: a new monitor's store from the shared monmap and keyring (the data dir comes from the conf)."""
    return ["ceph-mon", "-c", conf, "--mkfs", "-i", name, "--monmap", str(monmap), "--keyring", str(keyring)]


def osd_mkfs_args(conf: str, osd_id: int, osd_uuid: str) -> list[str]:
    """`ceph-osd --mkfs` for the OSD `ceph osd new` numbered: its store (where the conf says) and its new key."""
    return ["ceph-osd", "-c", conf, "-i", str(osd_id), "--mkfs", "--mkkey", "--no-mon-config", "--osd-uuid", osd_uuid]


def osd_auth_args(osd_id: int, keyring: Path) -> list[str]:
    """The `ceph` arguments that register the key `ceph-osd --mkfs` made, with the caps every OSD gets."""
    return ["auth", "add", f"osd.{osd_id}", *OSD_CAPS, "-i", str(keyring)]


# -- on the node ---------------------------------------------------------------------------------------------------
CONF = "/etc/ceph/ceph.conf"
ADMIN_KEYRING = "/etc/ceph/ceph.client.admin.keyring"
DATA = Path("/var/lib/ceph")
OSD_CAPS = ("osd", "allow *", "mon", "allow profile osd", "mgr", "allow profile osd")


def ceph(*args: str, timeout: float = 60) -> str:
    return run("ceph", "--connect-timeout", "15", *args, timeout=timeout)


def ceph_json(*args: str, timeout: float = 60) -> Any:
    return json.loads(ceph(*args, "-f", "json", timeout=timeout) or "null")


def conf_step(ctx: Context) -> str:
    """ceph.conf and the admin keyring: every node is a Ceph client (pvcd, libvirt, the API)."""
    p = params_for(ctx.cfg, ctx.secrets)
    write(CONF, render_conf(p))
    write(ADMIN_KEYRING, render_keyring({"client.admin": ctx.secrets.ceph_keys["client.admin"]}, CAPS), 0o600)
    for folder in (p.run_dir, p.log_dir, DATA, DATA / "mon", DATA / "mgr", DATA / "osd"):
        run("install", "-d", "-o", USER, "-g", USER, "-m", "0750", str(folder))
    run(*chown_argv(p.log_dir))  # logs a daemon wrote as root before it ran as ceph
    return f"fsid {p.fsid}, {len(p.mons)} mon(s)"


def mon_step(ctx: Context) -> str:
    p = params_for(ctx.cfg, ctx.secrets)
    name = ctx.node.name
    mon_dir = DATA / "mon" / f"ceph-{name}"
    if not (mon_dir / "done").exists():
        shutil.rmtree(mon_dir, ignore_errors=True)  # a half-made store from an interrupted first boot
        mon_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="pvc-mon.") as tmp:
            keyring, monmap = Path(tmp) / "keyring", Path(tmp) / "monmap"
            keyring.write_text(mon_keyring(ctx.secrets))
            run(*monmaptool_args(p, str(monmap)))
            run(*mon_mkfs_args(CONF, name, monmap, keyring))
        (mon_dir / "done").write_text("")
    run(*chown_argv(mon_dir))
    unit = f"pvc-ceph-mon@{name}.service"
    changed = units.install(unit, units.render(f"PVC Ceph monitor {name}", daemon_argv("mon", CONF, name)))
    units.ensure_running(unit, changed)

    def in_quorum() -> bool:
        units.check_alive(unit)
        return name in ceph_json("quorum_status", timeout=30).get("quorum_names", [])

    # a quorum needs a majority of the coordinators: the others may still be booting
    wait_for(f"mon.{name} to join a quorum of {len(p.mons)}", in_quorum, 1200, 2.0, log=lambda: units.journal(unit))
    return f"mon.{name} in quorum"


def mgr_step(ctx: Context) -> str:
    name = ctx.node.name
    mgr_dir = DATA / "mgr" / f"ceph-{name}"
    write(
        mgr_dir / "keyring",
        render_keyring({f"mgr.{name}": ctx.secrets.ceph_keys[f"mgr.{name}"]}, {f"mgr.{name}": MGR_CAPS}),
        0o600,
    )
    run(*chown_argv(mgr_dir))
    unit = f"pvc-ceph-mgr@{name}.service"
    changed = units.install(unit, units.render(f"PVC Ceph manager {name}", daemon_argv("mgr", CONF, name)))
    units.ensure_running(unit, changed)

    def available() -> bool:
        units.check_alive(unit)
        return bool(ceph_json("mgr", "stat").get("available"))

    wait_for("a Ceph manager to be available", available, 600, 2.0, log=lambda: units.journal(unit))
    return f"mgr.{name} running"


def bluestore_label(dev: str, signatures: list[str], run_probe: probe.Runner = probe.system_run) -> dict | None:
    """The bluestore label of `dev` (fsid, whoami, ...), None when the disk has none (as wipefs saw it: `signatures`).
    StepFailed when a label is there but cannot be read: such a disk is never taken for blank."""
    if probe.BLUESTORE not in signatures:
        return None
    out = run_probe(["ceph-bluestore-tool", "show-label", "--dev", dev])
    try:
        if out.code != 0:
            raise ValueError(f"exit {out.code}: {(out.err or out.out).strip()[-300:]}")
        label = next(iter(json.loads(out.out).values()))
        if not isinstance(label, dict) or "ceph_fsid" not in label or "whoami" not in label:
            raise ValueError(f"no ceph_fsid/whoami in {out.out.strip()[:300]!r}")
        return label
    except (ValueError, StopIteration) as exc:
        raise StepFailed(f"OSD disk {dev} has a bluestore label that cannot be read ({exc}); not touching it") from None


def disk_signatures(dev: str, run_probe: probe.Runner = probe.system_run) -> list[str]:
    """wipefs's signatures on an OSD candidate; a failed probe fails the step (the disk is never taken for blank)."""
    try:
        return probe.signatures(dev, run_probe)
    except probe.ProbeError as exc:
        raise StepFailed(f"cannot tell what is on OSD disk {dev} ({exc}); not touching it") from None


def osd_disks(ctx: Context, selectors: list[OsdDisk] | None = None) -> list[str]:
    """The devices the selectors (default: the node's `osds`) pick, the PVCDATA disk left out; StepFailed if one
    picks none."""
    selectors = list(ctx.node.osds) if selectors is None else selectors
    found = disks.scan([*selectors, ctx.node.data_disk])
    data_disk = next(iter(disks.select(ctx.node.data_disk, found)), None)
    used = {data_disk.dev} if data_disk else set()
    out = []
    for i, sel in enumerate(selectors):
        hits = [d for d in disks.select(sel, found) if d.dev not in used]
        if not hits:
            raise StepFailed(f"nodes '{ctx.node.name}' osds[{i}] ({disks.describe(sel)}) matches no disk")
        for d in hits[: sel.count] if sel.count else hits:
            used.add(d.dev)
            stable = [p for p in d.paths if p.startswith("/dev/disk/by-id/")]
            out.append(stable[0] if stable else d.dev)
    return out


def _osd_dir(osd_id: int) -> Path:
    return DATA / "osd" / f"ceph-{osd_id}"


def prepare_osd(ctx: Context, dev: str) -> int:
    """Create (if blank) or adopt (if it is this cluster's) the OSD on `dev`; returns its id. Every probe fails
    closed: a disk whose contents cannot be read is refused, never formatted."""
    present = disk_signatures(dev)
    label = bluestore_label(dev, present)
    if label is not None:
        if label.get("ceph_fsid") != ctx.secrets.ceph_fsid:
            raise StepFailed(
                f"OSD disk {dev} belongs to another Ceph cluster (fsid {label.get('ceph_fsid')}); not touching it"
            )
        osd_id = int(label["whoami"])
        osd_dir = _osd_dir(osd_id)
        osd_dir.mkdir(parents=True, exist_ok=True)
        _link(osd_dir / "block", dev)
        if not (osd_dir / "keyring").exists():
            write(osd_dir / "keyring", ceph("auth", "get", f"osd.{osd_id}"), 0o600)
        return osd_id
    if present:
        raise StepFailed(f"OSD disk {dev} is not blank (found: {', '.join(present)}); wipe it to use it as an OSD")
    pending = DATA / "osd" / ("pending-" + dev.replace("/", "_"))
    pending.parent.mkdir(parents=True, exist_ok=True)
    if not pending.exists():
        pending.write_text(str(uuid.uuid4()))
    osd_uuid = pending.read_text().strip()
    osd_id = int(ceph("osd", "new", osd_uuid).strip())  # the same uuid always gets the same id
    osd_dir = _osd_dir(osd_id)
    osd_dir.mkdir(parents=True, exist_ok=True)
    _link(osd_dir / "block", dev)
    run(*osd_mkfs_args(CONF, osd_id, osd_uuid), timeout=600)
    ceph(*osd_auth_args(osd_id, osd_dir / "keyring"))
    pending.unlink()
    return osd_id


def _link(link: Path, target: str) -> None:
    if link.is_symlink() and os.readlink(link) == target:
        return
    link.unlink(missing_ok=True)
    link.symlink_to(target)


def osd_step(ctx: Context) -> str:
    ids = ensure_osds(ctx, osd_disks(ctx))
    return "osd." + ", osd.".join(map(str, ids))


def ensure_osds(ctx: Context, devices: list[str], timeout: float = 600) -> list[int]:
    """Create or adopt an OSD on each device, run it, and wait until all are up (formation, and pvcd for
    `pvc storage osd add`)."""
    ids = [prepare_osd(ctx, dev) for dev in devices]
    for osd_id in ids:
        run(*chown_argv(_osd_dir(osd_id)))
        unit = f"pvc-ceph-osd@{osd_id}.service"
        # the device node belongs to root:disk again after every boot (and udev may reset it): give it to ceph at
        # each start; chown follows the block symlink to the device
        block = chown_argv(_osd_dir(osd_id) / "block", recursive=False)
        changed = units.install(
            unit,
            units.render(f"PVC Ceph OSD {osd_id}", daemon_argv("osd", CONF, str(osd_id)), exec_start_pre=[block]),
        )
        units.ensure_running(unit, changed)

    def all_up() -> bool:
        up = {o["osd"] for o in ceph_json("osd", "dump")["osds"] if o["up"]}
        missing = [i for i in ids if i not in up]
        for i in missing:
            units.check_alive(f"pvc-ceph-osd@{i}.service")
        return not missing

    wait_for(
        f"OSD(s) {', '.join(map(str, ids))} to be up",
        all_up,
        timeout,
        2.0,
        log=lambda: "".join(units.journal(f"pvc-ceph-osd@{i}.service") for i in ids),
    )
    return ids


def pools_step(ctx: Context) -> str:
    """The declared pools, created once by whichever coordinator gets the lock first (storage.pools.ensure_pool,
    the API's pool creation too). A pool is finished (size, min_size, then the rbd application last) before it
    counts as present, so an interrupted creation is completed on the next run, and a pool an administrator
    changed later is left as it is."""
    # librados only here: the renderers above are used where it is not needed
    from pvc.nodeos.storage import pools
    from pvc.nodeos.storage.ceph import StorageError, connect

    if not ctx.cfg.ceph.pools:
        return "all present"
    defaults = ctx.cfg.ceph.pool_defaults
    created = []
    try:
        lock = ctx.state.lock("pools", ctx.node.name, timeout=bounded(600))  # another coordinator may hold it
        busy = doing("taking the pools lock and creating the pools")
        with busy, lock, connect(CONF, timeout=15) as cluster:
            finished = pools.finished_pools(cluster)
            for pool in ctx.cfg.ceph.pools:
                if pool.name in finished:
                    continue
                pools.ensure_pool(
                    cluster,
                    pool.name,
                    pool.pgs or defaults.pgs,
                    pool.size or defaults.size,
                    pool.min_size or defaults.min_size,
                )
                created.append(pool.name)
    except (StorageError, Conflict) as exc:
        raise StepFailed(f"creating pools: {exc}") from None
    return f"created {', '.join(created)}" if created else "all present"
