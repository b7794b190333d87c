"""The first part of every boot (`pvc-node`, pvc.nodeos.formation.main): find cluster.toml, validate it, and find
this machine in it.

Nothing touches a disk before the config is valid and this machine is found in it. While that is not the case, the
console says what is wrong and what the node waits for (console.WAITING_MARKER), and the sources are tried again with a
growing delay.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

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
    join_key: str


def attempt(args: dict[str, str]) -> Booted:
    """One pass over discovery, validation and identification; raises discover.Unavailable saying what is wrong."""
    macs = identity.owned_macs()
    found = discover.discover(args, macs)
    result = load(found.path)
    if not result.valid or result.config is None:
        lines = [p.format(str(found.path)) for p in result.errors]
        raise discover.Unavailable(f"cluster.toml from {found.source} is invalid:\n  " + "\n  ".join(lines))
    try:
        node = identity.find(result.config, macs, args.get("node"))
    except identity.NotInConfig as exc:
        raise discover.Unavailable(f"cluster.toml from {found.source}: {exc}") from None
    try:
        join_key = read_join_key(result.config, found.path.parent)
    except ValueError as exc:
        raise discover.Unavailable(f"cluster.toml from {found.source}: {exc}") from None
    return Booted(result.config, node, found.path, found.source, join_key)


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
