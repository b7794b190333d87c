"""`pvc-node`, run by pvc-node.service inside the image at every boot.

    pvc-node boot      find cluster.toml, find this node in it, then run the formation graph
    pvc-node discover  only the first part: say which config and which node this machine would use

Nothing touches a disk before the config is valid and this machine is found in it. While that is not the case, the
console says what is wrong and what the node waits for, and the sources are tried again with a growing delay.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from pvc.config.load import load
from pvc.config.schema import ClusterFile, Node
from pvc.config.secrets import read_join_key
from pvc.nodeos.boot import cmdline, discover, identity

PREFIX = "pvc-node:"
WAITING_MARKER = "PVC-CONFIG-WAITING"


def say(message: str) -> None:
    print(f"{PREFIX} {message}", flush=True)


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
    except identity.NotFound as exc:
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
            say(f"{WAITING_MARKER}: {exc}")
            say(f"no disk has been touched; trying again in {delay:.0f} s")
            time.sleep(delay)
            delay = min(max_delay, delay * 2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """PVC node boot: config discovery and first-boot formation."""


@main.command()
def discover_cmd() -> None:
    """Say which cluster.toml and which node this machine would use (touches no disk)."""
    try:
        booted = attempt(cmdline.read())
    except discover.Unavailable as exc:
        click.echo(f"{PREFIX} {exc}", err=True)
        sys.exit(1)
    click.echo(f"config: {booted.source} (staged at {booted.path})\nnode: {booted.node.name} (id {booted.node.id})")


discover_cmd.name = "discover"


@main.command()
def boot() -> None:
    """Discover the config, then form this node (idempotent: a reboot changes nothing that is right)."""
    from pvc.config.secrets import cluster_secrets
    from pvc.nodeos.formation import plan
    from pvc.nodeos.formation.steps import Context

    args = cmdline.read()
    say("looking for cluster.toml (kernel argument pvc.config=, a PVCCONFIG filesystem, or /etc/pvc/cluster.toml)")
    booted = wait_for_config(args)
    cfg, node = booted.cfg, booted.node
    say(f"config from {booted.source}: cluster '{cfg.cluster.name}', this is node '{node.name}' (id {node.id})")
    secrets = cluster_secrets(booted.join_key, [n.name for n in cfg.coordinators])
    ctx = Context(cfg=cfg, node=node, config_path=booted.path, join_key=booted.join_key, secrets=secrets, say=say)
    ok = plan.form(ctx)
    if ctx.zk is not None:
        ctx.zk.stop()
    sys.exit(0 if ok else 1)
