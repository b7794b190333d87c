"""Patroni/PostgreSQL on the coordinators, with ZooKeeper as its store (pure rendering + the formation step).

Patroni keeps its keys under /service/<cluster name>/ in the same ZooKeeper ensemble. The roles' passwords and the
REST API's basic-auth password derive from the join key (docs/secrets.md). Debian 12's Patroni (3.0.2) cannot
authenticate to ZooKeeper with a digest, so its tree is protected by the node firewall instead (docs/security.md).
"""

from __future__ import annotations

import base64
import ipaddress
import urllib.request

import yaml

from pvc.config.schema import ClusterFile, Node
from pvc.config.secrets import PATRONI_REST_USER, patroni_rest_password, postgresql_password
from pvc.nodeos.formation import units
from pvc.nodeos.formation.machinery import Context, run, wait_for, write

CFG_PATH = "/etc/patroni/pvc.yml"
DATA_DIR = "/var/lib/postgresql/pvc"
BIN_DIR = "/usr/lib/postgresql/15/bin"
UNIT = "pvc-patroni.service"
MAX_SLOT_WAL_KEEP = "1GB"


def render(cfg: ClusterFile, node: Node, join_key: str, bin_dir: str = BIN_DIR, data_dir: str = DATA_DIR) -> str:
    pt = cfg.patroni
    ip = str(node.ip.cluster)
    subnet = str(ipaddress.ip_network(str(cfg.network.cluster.subnet)))
    pw = {role: postgresql_password(join_key, role) for role in ("superuser", "replication", "rewind", "app")}
    doc = {
        "scope": cfg.cluster.name,
        "namespace": "/service/",
        "name": node.name,
        "restapi": {
            "listen": f"{ip}:{pt.rest_port}",
            "connect_address": f"{ip}:{pt.rest_port}",
            # Patroni asks for it on every unsafe endpoint (restart, reinitialize, failover, switchover, config);
            # patronictl -c this file sends it
            "authentication": {"username": PATRONI_REST_USER, "password": patroni_rest_password(join_key)},
        },
        "zookeeper": {"hosts": [f"{n.ip.cluster}:{cfg.zookeeper.client_port}" for n in cfg.coordinators]},
        "bootstrap": {
            "dcs": {
                "ttl": pt.ttl,
                "loop_wait": pt.loop_wait,
                "retry_timeout": pt.retry_timeout,
                "maximum_lag_on_failover": pt.maximum_lag_on_failover,
                # a commit waits for one replica (when one runs), so a failover never loses a write the
                # provisioner was told had committed (docs/provisioner.md)
                "synchronous_mode": True,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "wal_log_hints": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"{ip},127.0.0.1:{pt.postgres_port}",
            "connect_address": f"{ip}:{pt.postgres_port}",
            "data_dir": f"{data_dir}/data",
            "bin_dir": bin_dir,
            "pgpass": f"{data_dir}/pgpass",
            # a new replica copies the leader with pg_basebackup, which waits for a checkpoint first: a spread one
            # (the default) kept every replica's formation waiting about 100 s; a fast one takes moments
            "basebackup": [{"checkpoint": "fast"}],
            "authentication": {
                "superuser": {"username": "postgres", "password": pw["superuser"]},
                "replication": {"username": "replicator", "password": pw["replication"]},
                "rewind": {"username": "rewind_user", "password": pw["rewind"]},
            },
            "pg_hba": [
                "local all all peer",
                "host all all 127.0.0.1/32 scram-sha-256",
                f"host replication replicator {subnet} scram-sha-256",
                f"host all all {subnet} scram-sha-256",
            ],
            "parameters": {
                "unix_socket_directories": "/run/postgresql",
                "password_encryption": "scram-sha-256",
                # a replica that stays away does not fill PVCDATA: its slot keeps at most this much WAL (then it is
                # invalidated and the replica is rebuilt)
                "max_slot_wal_keep_size": MAX_SLOT_WAL_KEEP,
            },
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def rest_auth_header(join_key: str) -> dict[str, str]:
    """The Authorization header of a local caller of Patroni's REST API."""
    token = base64.b64encode(f"{PATRONI_REST_USER}:{patroni_rest_password(join_key)}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def step(ctx: Context) -> str:
    changed = write(CFG_PATH, render(ctx.cfg, ctx.node, ctx.join_key), 0o640, group="postgres")
    run("install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", DATA_DIR)
    run("install", "-d", "-o", "postgres", "-g", "postgres", "-m", "2775", "/run/postgresql")
    changed |= units.install(UNIT, units.render("PVC Patroni (PostgreSQL)", ["patroni", CFG_PATH], user="postgres"))
    units.ensure_running(UNIT, changed)
    url = f"http://{ctx.node.ip.cluster}:{ctx.cfg.patroni.rest_port}/health"

    def healthy() -> bool:
        units.check_alive(UNIT)
        request = urllib.request.Request(url, headers=rest_auth_header(ctx.join_key))
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status == 200

    # a replica can only start once a leader has bootstrapped: that may be another coordinator still booting
    wait_for(f"PostgreSQL running under Patroni ({url})", healthy, 1200, 2.0, log=lambda: units.journal(UNIT))
    return "PostgreSQL running"
