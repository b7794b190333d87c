"""What the API knows of its cluster, read from cluster.toml and the join key in a process of its own.

The API never holds the join key. `load(path)` runs `python -m pvc.api.startup PATH`, which reads cluster.toml, the
join key and the key files, derives what the API needs (ZooKeeper's password, the API key pepper, the key records:
pvc.api.keys) and hands back the config without its secrets (join key, IPMI passwords, API keys), pickled on its
standard output. So the gunicorn master, and the workers it forks (as the unprivileged pvc-api user on a node: M9 in
docs/security.md), never had the join key in their memory: code run in a worker by a bug reaches ZooKeeper and Ceph,
but not the cluster CA, the node certificates (libvirt, root on every node), the BMCs or PostgreSQL.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pvc.api.keys import KeyFileError, KeyMaterial, key_material
from pvc.config.load import load as load_config
from pvc.config.schema import ClusterFile
from pvc.config.secrets import (
    api_key_pepper,
    initial_api_key,
    libvirt_secret_uuid,
    read_join_key,
    vm_mac_prefix,
    zookeeper_password,
)
from pvc.nodeos.provisioner.db import app_password

REDACTED_FILE = "/dev/null"  # what a redacted config names instead of a secret (the schema wants one or the other)


class StartupError(Exception):
    """cluster.toml or a file it names cannot be used; the message says which and why (never a secret)."""


@dataclass(frozen=True)
class Startup:
    cfg: ClusterFile  # without secrets: redacted()
    base_dir: Path
    zk_password: str
    keys: KeyMaterial
    vm_mac_prefix: str  # the cluster's MAC prefix for VM NICs (derived: the same on every node)
    ceph_secret_uuid: str  # the libvirt secret holding client.libvirt's key (shown in a VM's rendered XML)
    provisioner_password: str  # the app role's password on the provisioner's database (pvc.nodeos.provisioner.db)


def redacted(cfg: ClusterFile) -> ClusterFile:
    """`cfg` without the join key, the IPMI passwords and the API keys (the API needs none of them)."""
    cluster = cfg.cluster.model_copy(update={"join_key": None, "join_key_file": REDACTED_FILE})
    nodes = [
        n.model_copy(update={"ipmi": n.ipmi.model_copy(update={"password": None, "password_file": REDACTED_FILE})})
        if n.ipmi is not None
        else n
        for n in cfg.nodes
    ]
    api = cfg.api.model_copy(update={"keys": []})
    return cfg.model_copy(update={"cluster": cluster, "nodes": nodes, "api": api})


def build(path: str) -> Startup:
    """Read and derive, in this process (the helper's side of `load`)."""
    result = load_config(path)
    if not result.valid or result.config is None:
        raise StartupError("; ".join(p.format(path) for p in result.errors))
    cfg = result.config
    base = Path(path).resolve().parent
    try:
        join_key = read_join_key(cfg, base)
        keys = key_material(cfg.api.keys, base, api_key_pepper(join_key), initial_api_key(join_key))
    except (ValueError, KeyFileError) as exc:
        raise StartupError(str(exc)) from None
    return Startup(
        redacted(cfg),
        base,
        zookeeper_password(join_key),
        keys,
        vm_mac_prefix=vm_mac_prefix(join_key),
        ceph_secret_uuid=libvirt_secret_uuid(join_key),
        provisioner_password=app_password(join_key),
    )


def load(path: str, timeout: float = 60) -> Startup:
    """The Startup of cluster.toml at `path`, built by a helper process. Raises StartupError."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pvc.api.startup", path], capture_output=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StartupError(f"cannot run the start-up helper: {exc}") from None
    if out.returncode != 0:
        raise StartupError(out.stderr.decode(errors="replace").strip() or f"the helper failed ({out.returncode})")
    startup = pickle.loads(out.stdout)  # our own helper's answer, run from our own interpreter
    assert isinstance(startup, Startup)
    return startup


def main() -> None:
    try:
        startup = build(sys.argv[1])
    except StartupError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    sys.stdout.buffer.write(pickle.dumps(startup))


if __name__ == "__main__":  # run as a module: pickle the classes under their import names, not __main__'s
    from pvc.api.startup import main as imported_main

    imported_main()
