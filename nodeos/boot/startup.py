"""The first part of every boot (`pvc-node`, pvc.nodeos.formation.main): find cluster.toml, validate it, and find
this machine in it.

Nothing touches a disk before the config is valid and this machine is found in it. While that is not the case, the
console says what is wrong and what the node waits for (console.WAITING_MARKER), and the sources are tried again with a
growing delay.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pvc.config.load import load
from pvc.config.schema import ClusterFile, Node
from pvc.config.secrets import read_join_key
from pvc.nodeos.boot import console, discover, identity


def say(message: str) -> None:
    print(console.line(message), flush=True)


@dataclass(frozen=True)
class Booted:
    cfg: ClusterFile
    node: Node
    path: Path
    source: str
    join_key: str = field(repr=False)  # never printed, never logged


def attempt(args: dict[str, str]) -> Booted:
    """One pass over discovery, validation and identification; raises discover.Unavailable saying what is wrong."""
    macs = identity.owned_macs()
    found = discover.discover(args, macs)
    result = load(found.path)
    if not result.valid or result.config is None:
        lines = [p.format(str(found.path)) for p in result.errors]
        raise discover.Unavailable(f"cluster.toml from {found.source} is invalid:\n  " + "\n  ".join(lines))
    cfg = result.config
    if discover.plain_http(found.url) and cfg.cluster.join_key is not None:
        raise discover.Unavailable(
            f"cluster.toml from {found.source} came over plain http with the join key inline: anyone on the "
            "provisioning network now has every secret of the cluster, so this node refuses it. Serve the file over "
            "https (pvc.config_pin=<the server certificate's SHA-256> for a self-signed server), or replace join_key "
            'with join_key_file = "join.key" and give that file on a PVCCONFIG stick or as pvc.join_key=https://... '
            "(docs/image.md, PXE); then make a new join key: this one has been on the wire"
        )
    key_file = cfg.cluster.join_key_file
    if found.url is not None and key_file is not None and not PurePosixPath(key_file).is_absolute():
        said = discover.stage_join_key(args, key_file, found.path.parent)
        print(console.line(f"join key file {key_file} from {said}"), flush=True)
    try:
        node = identity.find(cfg, macs, args.get("node"))
    except identity.NotInConfig as exc:
        raise discover.Unavailable(f"cluster.toml from {found.source}: {exc}") from None
    try:
        join_key = read_join_key(cfg, found.path.parent)
    except ValueError as exc:
        raise discover.Unavailable(f"cluster.toml from {found.source}: {exc}") from None
    return Booted(cfg, node, found.path, found.source, join_key)


def wait_for_config(args: dict[str, str], max_delay: float = 60.0) -> Booted:
    delay = 2.0
    while True:
        try:
            return attempt(args)
        except discover.Unavailable as exc:
            say(console.waiting(str(exc)))
            say(f"no disk has been touched; trying again in {delay:.0f} s")
            time.sleep(delay)
            delay = min(max_delay, delay * 2)
