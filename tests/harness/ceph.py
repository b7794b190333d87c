"""A real Ceph (Debian's Pacific) for component tests: one mon, one mgr and N bluestore OSDs on sparse files,
configured by the product's renderer with the secrets derived from a join key.

The daemons run in a network namespace of their own (CephNet), reached from the test process over a veth pair and,
while a runtime cluster runs, from its simulated nodes over that cluster's storage bridge: so QEMU processes in the
nodes' namespaces open RBD disks on the same Ceph the storage tests use.

Recipe and pitfalls: shared/reference/feasibility-services.md §2.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pvc.config.secrets import cluster_secrets
from pvc.installer.lab.command import ip
from pvc.nodeos.formation import ceph as cephform
from tests.harness.netlab import kill_all_in
from tests.harness.procs import Proc, wait_until

# A one-machine cluster can hold no more than one copy per host, and this disk is mostly full: the options below
# are what lets it report HEALTH_OK (feasibility-services.md §2, pitfall 6).
TEST_OPTIONS = {
    "osd crush chooseleaf type": "0",
    "mon allow pool size one": "true",
    "mon warn on pool no redundancy": "false",
    "mon warn on insecure global id reclaim allowed": "false",
    "mon data avail warn": "2",
    "mon data avail crit": "1",
    "osd objectstore": "bluestore",
    "bluestore block create": "true",
    "bluestore block size": str(2 * 1024**3),
    "bluestore fsck on mkfs": "false",
    "osd max object name len": "256",
    "osd max object namespace len": "64",
    "mgr stats period": "1",  # pool usage reaches `ceph df` within a second (the 80 % rule is tested)
}


class CephNet:
    """Ceph's own network namespace: a /30 of 203.0.113.0/24 (chosen by `index`) on a veth pair with the host, and
    `attach()` to link it to a runtime cluster's bridge (nodes get a host route to the Ceph address)."""

    def __init__(self, name: str, index: int) -> None:
        self.ns = name
        self.host_dev = f"c{name}"[:15]
        base = 4 * (index % 64)
        self.host_ip = f"203.0.113.{base + 1}"
        self.address = f"203.0.113.{base + 2}"
        self.network = f"203.0.113.{base}/30"

    def up(self) -> None:
        self.down()
        ip("netns", "add", self.ns)
        ip("-n", self.ns, "link", "set", "lo", "up")
        ip("link", "add", self.host_dev, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_dev)
        ip("link", "set", self.host_dev, "up")
        ip("-n", self.ns, "addr", "add", f"{self.address}/30", "dev", "eth0")
        ip("-n", self.ns, "link", "set", "eth0", "up")

    def attach(self, switch_ns: str, bridge: str, address: str, node_namespaces: list[str]) -> None:
        """Plug Ceph's namespace into `bridge` (in `switch_ns`) as `address`/24 and route the nodes to it. The
        link goes away with the switch namespace."""
        ip("-n", self.ns, "link", "del", "lab0", check=False)
        ip("-n", switch_ns, "link", "add", "ceph0", "type", "veth", "peer", "name", "lab0", "netns", self.ns)
        ip("-n", switch_ns, "link", "set", "ceph0", "master", bridge, "up")
        ip("-n", self.ns, "addr", "add", f"{address}/24", "dev", "lab0")
        ip("-n", self.ns, "link", "set", "lab0", "up")
        for ns in node_namespaces:
            ip("-n", ns, "route", "replace", f"{self.address}/32", "via", address)

    def exec(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def down(self) -> None:
        if self.ns in ip("netns", "list", check=False).stdout.split():
            kill_all_in(self.ns)
            ip("netns", "del", self.ns, check=False)
        ip("link", "del", self.host_dev, check=False)


class Ceph:
    def __init__(
        self,
        workdir: Path,
        join_key: str,
        address: str = "127.0.0.1",
        port: int = 26789,
        osds: int = 3,
        mgr: str = "a",
        net: CephNet | None = None,
    ) -> None:
        shutil.rmtree(workdir, ignore_errors=True)
        self.dir = workdir
        for sub in ("run", "log", "etc", "mon", "mgr", "osd"):
            (workdir / sub).mkdir(parents=True)
        for parent in workdir.parents:  # the daemons run as the ceph user, as on a node: it must reach this folder
            if parent in (Path("/"), Path("/tmp")):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
        self.secrets = cluster_secrets(join_key, [mgr])
        self.net = net
        if net is not None:
            address = net.address
        self.address = address
        self.port = port
        self.params = cephform.CephParams(
            fsid=self.secrets.ceph_fsid,
            mons=[("a", address)],
            public_network=net.network if net else "127.0.0.0/8",
            pool_size=1,
            pool_min_size=1,
            pg_num=8,
            mon_port=port,
            mon_v2_port=port + 1,
            run_dir=str(workdir / "run"),
            data_root=str(workdir),
            log_dir=str(workdir / "log"),
            keyring_dir=str(workdir / "etc"),
            osd_memory_target=939524096,
            extra=TEST_OPTIONS,
        )
        self.conf = workdir / "etc" / "ceph.conf"
        self.conf.write_text(cephform.render_conf(self.params))
        self.admin_keyring = workdir / "etc" / "ceph.client.admin.keyring"
        self.admin_keyring.write_text(
            cephform.render_keyring({"client.admin": self.secrets.ceph_keys["client.admin"]}, cephform.CAPS)
        )
        self.libvirt_keyring = workdir / "etc" / "ceph.client.libvirt.keyring"  # found by [client] keyring
        self.libvirt_keyring.write_text(
            cephform.render_keyring({"client.libvirt": self.secrets.ceph_keys["client.libvirt"]}, {})
        )
        self.nosd = osds
        self.mgr = mgr
        self.procs: list[Proc] = []

    def run(self, *args: str, check: bool = True, input: str | None = None) -> str:
        out = subprocess.run(list(args), capture_output=True, text=True, input=input, timeout=120)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout

    def ceph(self, *args: str) -> str:
        return self.run("ceph", "-c", str(self.conf), "--connect-timeout", "20", *args)

    def ceph_json(self, *args: str) -> dict:
        return json.loads(self.ceph(*args, "-f", "json"))

    def daemon(self, name: str, argv: list[str], log: Path) -> Proc:
        return Proc(name, self.net.exec(argv) if self.net else argv, log)

    def up(self) -> None:
        if self.net is not None:
            self.net.up()
        keyring = self.dir / "mon.keyring"  # outside the mon data dir: mkfs silently does nothing in a non-empty one
        keyring.write_text(cephform.mon_keyring(self.secrets))
        monmap = self.dir / "monmap"
        self.run(*cephform.monmaptool_args(self.params, str(monmap)))
        self.run(*cephform.mon_mkfs_args(str(self.conf), "a", monmap, keyring))
        self.run(*cephform.chown_argv(self.dir))
        self.procs.append(
            self.daemon("ceph-mon", cephform.daemon_argv("mon", str(self.conf), "a"), self.dir / "mon.log")
        )
        wait_until("the mon to answer", lambda: self.ceph("mon", "stat"), 60, interval=0.3, proc=self.procs[-1])
        mgr_dir = self.dir / "mgr" / f"ceph-{self.mgr}"
        mgr_dir.mkdir(parents=True)
        (mgr_dir / "keyring").write_text(
            cephform.render_keyring(
                {f"mgr.{self.mgr}": self.secrets.ceph_keys[f"mgr.{self.mgr}"]}, {f"mgr.{self.mgr}": cephform.MGR_CAPS}
            )
        )
        self.run(*cephform.chown_argv(mgr_dir))
        self.procs.append(
            self.daemon("ceph-mgr", cephform.daemon_argv("mgr", str(self.conf), self.mgr), self.dir / "mgr.log")
        )
        with ThreadPoolExecutor(self.nosd) as pool:  # mkfs takes seconds each: do them side by side
            ids = list(pool.map(lambda _: self.prepare_osd(), range(self.nosd)))
        for osd_id in sorted(ids):
            self.start_osd(osd_id)
        wait_until(
            f"{self.nosd} OSDs up", lambda: self.ceph_json("osd", "stat")["num_up_osds"] == self.nosd, 120, interval=0.5
        )
        wait_until("the mgr to be available", lambda: self.ceph_json("mgr", "stat")["available"], 120, interval=0.5)

    def add_osd(self) -> int:
        osd_id = self.prepare_osd()
        self.start_osd(osd_id)
        return osd_id

    def prepare_osd(self) -> int:
        osd_uuid = str(uuid.uuid4())
        osd_id = int(self.ceph("osd", "new", osd_uuid).strip())
        osd_dir = self.dir / "osd" / f"ceph-{osd_id}"
        osd_dir.mkdir(parents=True)
        self.run(*cephform.osd_mkfs_args(str(self.conf), osd_id, osd_uuid))
        self.ceph(*cephform.osd_auth_args(osd_id, osd_dir / "keyring"))
        self.run(*cephform.chown_argv(osd_dir))
        return osd_id

    def start_osd(self, osd_id: int) -> Proc:
        proc = self.daemon(
            f"ceph-osd.{osd_id}",
            cephform.daemon_argv("osd", str(self.conf), str(osd_id)),
            self.dir / f"osd.{osd_id}.log",
        )
        self.procs.append(proc)
        return proc

    def stop_osd(self, osd_id: int) -> None:
        self.osd_proc(osd_id).kill()

    def osd_proc(self, osd_id: int) -> Proc:
        return next(p for p in reversed(self.procs) if p.name == f"ceph-osd.{osd_id}" and p.alive())

    def health(self) -> str:
        return self.ceph_json("health")["status"]

    def down(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()  # SIGKILL: an OSD given SIGTERM after the mon is gone takes ~10 s (pitfall 5)
        if self.net is not None:
            self.net.down()
