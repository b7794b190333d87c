"""The `pvc` command: a Click group whose subcommand groups load only when used, so `pvc --help` is instant."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

# name -> "module:attribute" of each command group. Modules load on first use.
GROUPS = {
    "config": ("pvc.cli.config", "config", "Validate, create, inspect cluster.toml files (offline)."),
    "cluster": ("pvc.cli.cluster", "cluster", "Cluster status, faults, maintenance mode, formation."),
    "node": ("pvc.cli.node", "node", "Nodes: state and resources; flush, ready, primary, log."),
    "vm": ("pvc.cli.vm", "vm", "VMs: define, start, stop, migrate, tune, console, remove."),
    "network": ("pvc.cli.network", "network", "Client networks: bridged and managed, DHCP, ACLs."),
    "storage": ("pvc.cli.storage", "storage", "Ceph storage: status, pools, volumes, snapshots, OSDs."),
    "image": ("pvc.cli.image", "image", "Base images VM disks are cloned from: upload, list, remove."),
    "provisioner": ("pvc.cli.provisioner", "provisioner", "Templates, cloud-init userdata, profiles and OVAs."),
    "task": ("pvc.cli.task", "task", "Long operations and their progress."),
    "connection": ("pvc.cli.connection", "connection", "Connection profiles: API address, key, TLS."),
    "completion": ("pvc.cli.completion", "completion", "Print the shell completion script (bash, zsh, fish)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *GROUPS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in GROUPS:
            module, attr, _ = GROUPS[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, GROUPS[name][2]) for name in sorted(GROUPS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _complete_connection(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
    from pvc.cli.names import connection_names

    return connection_names(ctx, param, incomplete)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "-c",
    "--connection",
    metavar="NAME",
    shell_complete=_complete_connection,
    help="Connection profile to use (default: $PVC_CONNECTION, then the default profile).",
)
@click.option("--insecure", is_flag=True, help="Do not verify the API's TLS certificate.")
@click.version_option(package_name="pvc", prog_name="pvc")
def cli(connection: str | None, insecure: bool) -> None:
    """PVC: manage a PVC virtualization cluster."""


def main(argv: list[str] | None = None) -> Any:
    """Entry point: never shows a traceback unless PVC_DEBUG=1."""
    try:
        return cli.main(args=argv, prog_name="pvc", standalone_mode=True)
    except Exception as exc:  # a bug: say so in one line
        if os.environ.get("PVC_DEBUG") == "1":
            raise
        click.echo(f"pvc: internal error: {type(exc).__name__}: {exc} (set PVC_DEBUG=1 for details)", err=True)
        sys.exit(70)


if __name__ == "__main__":
    main()
