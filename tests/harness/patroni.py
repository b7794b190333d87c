"""A real Patroni cluster (Debian's patroni and PostgreSQL 15) of one or more members on loopback, over a real
ZooKeeper, for component tests and benches.

Each member's configuration is the product's (pvc.nodeos.formation.patroni.render: the derived passwords, scram,
the REST API's basic auth, the DCS timings of cluster.toml) with this host's addresses, ports and folders. Members
run as the postgres user (PostgreSQL refuses root), as foreground child processes ended by PID.

    with Patroni.running(workdir, zk.hosts, JOIN_KEY, cfg, [(5441, 8011), (5442, 8012)]) as pg:
        pg.members_string()   # "127.0.0.1:5441,127.0.0.1:5442", what the API's connections are given
        pg.switchover()       # the leader hands over to another member
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pvc.config.schema import ClusterFile
from pvc.nodeos.formation import patroni as ptform
from tests.harness.procs import Proc, port_free, wait_until

ADDRESS = "127.0.0.1"


@dataclass
class Member:
    name: str
    pg_port: int
    rest_port: int
    dir: Path
    config: Path
    proc: Proc | None = None

    @property
    def address(self) -> str:
        return f"{ADDRESS}:{self.pg_port}"


class Patroni:
    def __init__(
        self, workdir: Path, zk_hosts: str, join_key: str, cfg: ClusterFile, ports: list[tuple[int, int]]
    ) -> None:
        """`ports`: (PostgreSQL port, REST port) of each member."""
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        for parent in [workdir, *workdir.parents]:  # the members run as postgres: it must reach their folders
            if parent in (Path("/"), Path("/tmp")):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
        self.dir = workdir
        self.cfg = cfg
        self.join_key = join_key
        self.prepared = ""  # what formation's provisioner step said, when a fixture ran it
        self.scope = f"pvctest-{uuid.uuid4().hex[:8]}"  # its own tree in a shared ZooKeeper
        self.members: list[Member] = []
        subnet = str(ipaddress.ip_network(str(cfg.network.cluster.subnet)))
        for i, (pg_port, rest_port) in enumerate(ports, 1):
            port_free(pg_port)
            port_free(rest_port)
            d = workdir / f"pg{i}"
            d.mkdir()
            shutil.chown(d, "postgres", "postgres")
            d.chmod(0o700)
            doc = yaml.safe_load(ptform.render(cfg, cfg.nodes[i - 1], join_key, data_dir=str(d)))
            doc.update(scope=self.scope, name=f"pg{i}", zookeeper={"hosts": zk_hosts.split(",")})
            doc["restapi"].update(listen=f"{ADDRESS}:{rest_port}", connect_address=f"{ADDRESS}:{rest_port}")
            pg = doc["postgresql"]
            pg.update(listen=f"{ADDRESS}:{pg_port}", connect_address=f"{ADDRESS}:{pg_port}")
            pg["parameters"].update(unix_socket_directories=str(d), shared_buffers="16MB", max_connections=40)
            pg["pg_hba"] = [line.replace(subnet, f"{ADDRESS}/32") for line in pg["pg_hba"]]
            config = workdir / f"pg{i}.yml"
            config.write_text(yaml.safe_dump(doc, sort_keys=False))
            shutil.chown(config, "postgres", "postgres")
            self.members.append(Member(f"pg{i}", pg_port, rest_port, d, config))

    @classmethod
    @contextlib.contextmanager
    def running(cls, *args: Any, **kwargs: Any) -> Iterator[Patroni]:
        """Start every member, wait for a leader and every replica, and stop them all afterwards."""
        cluster = cls(*args, **kwargs)
        try:
            cluster.up()
            yield cluster
        finally:
            cluster.down()

    # -- processes ---------------------------------------------------------------------------------------------
    def start(self, member: Member) -> None:
        member.proc = Proc(
            f"patroni {member.name}",
            ["runuser", "-u", "postgres", "--", "patroni", str(member.config)],
            self.dir / f"{member.name}.log",
        )

    def up(self, timeout: float = 90) -> None:
        self.start(self.members[0])  # the first bootstraps (initdb); the others clone it
        self.wait_leader(timeout)
        for member in self.members[1:]:
            self.start(member)
        self.wait_running(timeout)

    def down(self) -> None:
        for member in self.members:
            if member.proc is not None:
                member.proc.stop(timeout=15)
            end_postmaster(member.dir / "data")

    # -- the REST API ------------------------------------------------------------------------------------------
    def rest(self, member: Member, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://{ADDRESS}:{member.rest_port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **ptform.rest_auth_header(self.join_key)},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                payload, status = resp.read(), resp.status
        except urllib.error.HTTPError as exc:
            payload, status = exc.read(), exc.code
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode(errors="replace")

    def state(self) -> list[dict]:
        """Every member as the first answering member's /cluster lists it (name, role, state, ...)."""
        for member in self.members:
            with contextlib.suppress(OSError):
                status, body = self.rest(member, "GET", "/cluster")
                if status == 200:
                    return list(body["members"])
        return []

    def leader(self) -> str | None:
        return next((m["name"] for m in self.state() if m["role"] == "leader" and m["state"] == "running"), None)

    def wait_leader(self, timeout: float = 90, other_than: str | None = None) -> str:
        def found() -> str | None:
            name = self.leader()
            return name if name and name != other_than else None

        proc = self.members[0].proc if len(self.members) == 1 else None
        return str(wait_until("a running Patroni leader", found, timeout, interval=0.3, proc=proc))

    def wait_running(self, timeout: float = 90) -> None:
        names = {m.name for m in self.members}

        def all_running() -> bool:
            # a replica follows the leader once it is on the leader's timeline (after a switchover the old leader
            # is rewound and restarted first); before that, it would miss whatever the leader wrote since
            state = self.state()
            leader = next((m for m in state if m["role"] == "leader" and m["state"] == "running"), None)
            running = {m["name"] for m in state if m["state"] in ("running", "streaming")}
            return leader is not None and running == names and all(m["timeline"] == leader["timeline"] for m in state)

        wait_until(f"{len(names)} Patroni member(s) running on the leader's timeline", all_running, timeout, 0.3)

    def switchover(self, timeout: float = 60) -> tuple[str, str]:
        """Hand the leadership to another member (Patroni's switchover): (old leader, new leader)."""
        old = self.wait_leader()
        # formation's Patroni runs in synchronous mode: the leader hands over only to its synchronous standby
        wait_until("a synchronous standby", lambda: any(m["role"] == "sync_standby" for m in self.state()), timeout)
        member = next(m for m in self.members if m.name == old)
        status, body = self.rest(member, "POST", "/switchover", {"leader": old})
        assert status == 200, f"switchover refused ({status}): {body}"
        new = self.wait_leader(timeout, other_than=old)
        self.wait_running(timeout)
        return old, new

    # -- addresses ---------------------------------------------------------------------------------------------
    def members_string(self) -> str:
        """host:port of every member, as cluster.toml's coordinators give them to the API."""
        return ",".join(m.address for m in self.members)


def end_postmaster(data_dir: Path, timeout: float = 15) -> None:
    """End the PostgreSQL server of `data_dir` if it still runs: Patroni may have (re)started it after it was told
    to stop (a rewound replica), and then it outlives Patroni. Found by its postmaster.pid, checked against
    /proc, ended by PID: SIGINT (PostgreSQL's fast shutdown), then SIGKILL."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if str(data_dir).encode() not in cmdline:
        return  # a stale file: that PID is someone else now
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.1)
