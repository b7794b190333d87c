"""ZooKeeper: zoo.cfg, myid and the server command, rendered from cluster.toml (pure functions)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from pvc.config.schema import ClusterFile, Node
from pvc.nodeos.formation import datadisk, units
from pvc.nodeos.formation.machinery import Context, run, wait_for, write
from pvc.nodeos.state.migrations import ensure_schema
from pvc.nodeos.state.store import cluster_client

CLASSPATH = ":".join(
    [
        "/etc/zookeeper/conf_example",
        "/usr/share/java/zookeeper.jar",  # its manifest names the rest of the class path
        "/usr/share/java/slf4j-log4j12.jar",
        "/usr/share/java/log4j-1.2.jar",
    ]
)
QUORUM_PORT = 2888
ELECTION_PORT = 3888


@dataclass(frozen=True)
class ZkParams:
    data_dir: str
    client_address: str
    client_port: int = 2181
    tick_time_ms: int = 1000
    init_limit: int = 10
    sync_limit: int = 5
    servers: list[tuple[int, str]] = field(default_factory=list)  # (id, address); empty = standalone
    server_id: int | None = None
    heap_bytes: int = 512 * 1024**2


def params_for(cfg: ClusterFile, node: Node, data_dir: str) -> ZkParams:
    zk = cfg.zookeeper
    return ZkParams(
        data_dir=data_dir,
        client_address=str(node.ip.cluster),
        client_port=zk.client_port,
        tick_time_ms=zk.tick_time_ms,
        init_limit=zk.init_limit,
        sync_limit=zk.sync_limit,
        servers=[(n.id, str(n.ip.cluster)) for n in cfg.coordinators],
        server_id=node.id,
        heap_bytes=zk.heap,
    )


def render_cfg(p: ZkParams) -> str:
    # maxSessionTimeout stays at ZooKeeper's default (20 ticks), which the config checks rely on.
    lines = [
        f"tickTime={p.tick_time_ms}",
        f"initLimit={p.init_limit}",
        f"syncLimit={p.sync_limit}",
        f"dataDir={p.data_dir}",
        f"clientPort={p.client_port}",
        f"clientPortAddress={p.client_address}",
        "admin.enableServer=false",
        "4lw.commands.whitelist=srvr,stat,ruok,mntr",
        # Bounded growth on PVCDATA: a snapshot (and a new transaction log) at least every 64 MiB of transactions,
        # and every hour all but the last 5 snapshots and their logs removed.
        "snapSizeLimitInKb=65536",
        "autopurge.snapRetainCount=5",
        "autopurge.purgeInterval=1",
    ]
    if len(p.servers) > 1:
        lines += [f"server.{sid}={addr}:{QUORUM_PORT}:{ELECTION_PORT}" for sid, addr in p.servers]
    return "\n".join(lines) + "\n"


def render_myid(p: ZkParams) -> str | None:
    return f"{p.server_id}\n" if len(p.servers) > 1 and p.server_id is not None else None


def command(cfg_path: str, p: ZkParams) -> list[str]:
    heap_mib = max(64, p.heap_bytes // 1024**2)
    return [
        "java",
        f"-Xmx{heap_mib}m",
        "-XX:+UseSerialGC",
        "-Dzookeeper.root.logger=INFO,CONSOLE",
        "-Dzookeeper.log.dir=" + p.data_dir,
        "-cp",
        CLASSPATH,
        "org.apache.zookeeper.server.quorum.QuorumPeerMain",
        cfg_path,
    ]


# -- on the node ---------------------------------------------------------------------------------------------------
DATA_DIR = "/var/lib/zookeeper"
CFG_PATH = "/etc/zookeeper/pvc/zoo.cfg"
UNIT = "pvc-zookeeper.service"


def mode(address: str, port: int, timeout: float = 2.0) -> str | None:
    """The server's `Mode:` from the `srvr` four-letter command (leader, follower, standalone), None if it has none."""
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(b"srvr")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return None


def step(ctx: Context) -> str:
    p = params_for(ctx.cfg, ctx.node, DATA_DIR)
    changed = write(CFG_PATH, render_cfg(p))
    myid = render_myid(p)
    if myid is not None:
        changed |= write(f"{DATA_DIR}/myid", myid)
    run("chown", "-R", "zookeeper:zookeeper", DATA_DIR, check=False)
    unit = units.render("PVC ZooKeeper server", command(CFG_PATH, p), user="zookeeper", env={"ZOO_LOG_DIR": DATA_DIR})
    changed |= units.install(UNIT, unit)
    units.ensure_running(UNIT, changed)

    def ready() -> str | None:
        units.check_alive(UNIT)
        return mode(p.client_address, p.client_port)

    # The ensemble needs a majority of coordinators: the others may still be booting, so wait long.
    m = wait_for(
        f"ZooKeeper on {p.client_address}:{p.client_port} to join a quorum",
        ready,
        1200,
        1.0,
        log=lambda: units.journal(UNIT),
    )
    return f"{m} of {len(p.servers) or 1}"


def client_step(ctx: Context) -> str:
    """Every node: a kazoo client with the cluster's credentials, and the key layout created or migrated."""
    if ctx.zk is None:
        zk = cluster_client(ctx.cfg, ctx.join_key, timeout=10)

        def connect() -> bool:
            zk.start(timeout=10)
            return True

        wait_for(f"a ZooKeeper quorum at {zk.hosts}", connect, 1200, 2.0)
        ctx.zk = zk
    version = ensure_schema(ctx.state, ctx.join_key)
    if ctx.data is not None:
        for note in datadisk.record(ctx.state, ctx.node, ctx.data):
            ctx.say(note)
    return f"connected, layout schema {version}"
