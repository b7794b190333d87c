"""`pvc-node`, run by pvc-node.service inside the image at every boot.

    pvc-node boot      find cluster.toml, find this node in it (pvc.nodeos.boot.startup), then form the node (plan.py)
    pvc-node discover  only the first part: say which config and which node this machine would use

Here, above both halves, because a boot is discovery and then formation.
"""

from __future__ import annotations

import sys

import click

from pvc.config.secrets import cluster_secrets
from pvc.nodeos.boot import cmdline, console, discover
from pvc.nodeos.boot.startup import attempt, say, wait_for_config
from pvc.nodeos.formation import plan
from pvc.nodeos.formation.machinery import Context

HALTED = 3  # the exit status pvc-node.service does not restart on (RestartPreventExitStatus): PVCDATA needs a human


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """PVC node boot: config discovery and first-boot formation."""


@main.command("discover")
def discover_cmd() -> None:
    """Say which cluster.toml and which node this machine would use (touches no disk)."""
    try:
        booted = attempt(cmdline.read())
    except discover.Unavailable as exc:
        click.echo(console.line(str(exc)), err=True)
        sys.exit(1)
    click.echo(f"config: {booted.source} (staged at {booted.path})\nnode: {booted.node.name} (id {booted.node.id})")


@main.command()
def boot() -> None:
    """Discover the config, then form this node (idempotent: a reboot changes nothing that is right)."""
    args = cmdline.read()
    say(f"{console.SEARCHING} (kernel argument pvc.config=, a PVCCONFIG filesystem, or /etc/pvc/cluster.toml)")
    booted = wait_for_config(args)
    cfg, node = booted.cfg, booted.node
    say(f"config from {booted.source}: cluster '{cfg.cluster.name}', this is node '{node.name}' (id {node.id})")
    secrets = cluster_secrets(booted.join_key, [n.name for n in cfg.coordinators])
    ctx = Context(cfg=cfg, node=node, config_path=booted.path, join_key=booted.join_key, secrets=secrets, say=say)
    result = plan.form(ctx)
    if ctx.zk is not None:
        ctx.zk.stop()
    sys.exit({"formed": 0, "failed": 1}.get(result, HALTED))
