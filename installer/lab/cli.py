"""`pvc-lab`: N nodes of the real image on one machine, with simulated BMCs, formed from one cluster.toml.

    pvc-lab up [--nodes N] [--backend container|vm] [--config FILE]
    pvc-lab status [--format json]      pvc-lab ssh NODE [-- CMD]
    pvc-lab kill NODE                   pvc-lab start NODE          pvc-lab down

The `container` backend boots the image's root with systemd-nspawn (container.py), the `vm` backend boots the real
media in QEMU (vm.py). Power goes through each node's BMC over real IPMI (bmc.py, supervisor.py). Everything lives
in network namespaces the lab creates (network.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import NoReturn, cast, get_args

import click

from pvc.installer.lab import state
from pvc.installer.lab.command import LabError
from pvc.installer.lab.state import BOOT_MODES, Backend, Lab


def nsenter_argv(pid: int, command: list[str]) -> list[str]:
    return ["nsenter", "--target", str(pid), "--mount", "--uts", "--ipc", "--net", "--pid", "--", *command]


def bmc_power(lab: Lab, name: str, on: bool) -> str:
    """Power a node on or off through its BMC, with the fencer's IPMI client (pvc.nodeos.ipmi), from inside the
    lab's namespace where the BMC addresses live. Returns the BMC's answer."""
    from pvc.installer.lab.machine import enter_netns
    from pvc.nodeos.ipmi import Bmc, IpmiError

    b = lab.node(name).bmc
    enter_netns(lab.lab_ns)  # this process only runs this one command
    client = Bmc(address=b.address, username=b.username, password=b.password, port=b.port)
    try:
        return client.power_on() if on else client.power_off()
    except IpmiError as exc:
        raise LabError(str(exc)) from None


def _fail(exc: Exception) -> NoReturn:
    click.echo(f"pvc-lab: {exc}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """A PVC cluster of N nodes of the real image on this machine."""


@main.command("up")
@click.option("--nodes", "nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--backend", type=click.Choice(get_args(Backend)), default="container", show_default=True)
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="cluster.toml (default: the lab's example for --nodes and --backend: lab-3node.toml, lab-vm-1node.toml, ...)",
)
@click.option(
    "--boot",
    type=click.Choice(BOOT_MODES),
    default="kernel",
    show_default=True,
    help="vm backend: how QEMU boots the image (direct kernel, the USB image or the ISO under UEFI or BIOS, or PXE)",
)
@click.option("--api-port", type=click.IntRange(1, 65535), default=17370, show_default=True)
@click.option("--timeout", type=float, default=900, show_default=True, help="seconds to wait for formation")
@click.option(
    "--until",
    default=None,
    metavar="STEP",
    help="return once every node has finished this formation step (e.g. data) instead of waiting for all of them",
)
@click.option(
    "--squashfs",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="use this filesystem.squashfs instead of building the image",
)
def up_cmd(
    nodes: int,
    backend: str,
    boot: str,
    config: Path | None,
    api_port: int,
    timeout: float,
    until: str | None,
    squashfs: Path | None,
) -> None:
    """Create the lab, power every node on, and return when the cluster has formed."""
    from pvc.installer.lab.up import up

    try:
        if config is None:
            config = state.example_config(backend, nodes)
        up(config, cast(Backend, backend), api_port, timeout, squashfs, say=click.echo, boot=boot, until=until)
    except LabError as exc:
        if state.lab_file().exists():
            exc = LabError(
                f"{exc}\n(the lab is left as it is for a look: pvc-lab status, pvc-lab ssh NODE; remove it with pvc-lab down)"
            )
        _fail(exc)


@main.command("status")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def status_cmd(fmt: str) -> None:
    """Power, formation progress and console state of every node."""
    from pvc.installer.lab.observe import status_rows

    try:
        lab = state.read()
    except LabError as exc:
        _fail(exc)
    import dataclasses

    from pvc.installer.lab import upstream

    rows = status_rows(lab)
    up = upstream.status(lab.upstream) if lab.upstream is not None else None
    doc = {
        "backend": lab.backend,
        "api": f"https://127.0.0.1:{lab.api_port}",
        "nodes": rows,
        "upstream": dataclasses.asdict(up) if up else None,
    }
    if fmt == "json":
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"backend {doc['backend']}, API {doc['api']} (connection 'lab')")
    if up is not None:
        established = sum(1 for s in up.sessions.values() if s == "Established")
        click.echo(
            f"upstream router {up.router} (AS {up.asn}, namespace {up.namespace}): BGP {established}/"
            f"{len(up.sessions)} established, learned {', '.join(up.learned) or 'nothing'}; world {up.world}"
            + (f"; {up.problem}" if up.problem else "")
        )
    click.echo(f"{'NODE':8} {'POWER':6} {'FORMED':6} {'STEPS':6} {'CURRENT':16} PROBLEM")
    for r in rows:
        click.echo(
            f"{r['node']:8} {r['power']:6} {'yes' if r['formed'] else 'no':6} {r['steps_done']}/{r['steps']:<4} {r['current']:16} {r['problem']}"
        )


@main.command("ssh", context_settings={"ignore_unknown_options": True})
@click.option(
    "--identity",
    "-i",
    envvar="PVC_LAB_IDENTITY",
    default=None,
    help="vm backend: private key of a [[users]] entry (default: ssh's own, ~/.ssh/id_* or the agent)",
)
@click.option("--user", "-l", default=None, help="vm backend: log in as this user (default: the first [[users]])")
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh_cmd(node: str, command: tuple[str, ...], identity: str | None, user: str | None) -> None:
    """A shell (or CMD) on NODE: as root through the node's namespaces (container backend), or by ssh to the node's
    upstream address as a [[users]] entry of cluster.toml (vm backend)."""
    from pvc.installer.lab.observe import init_pid

    try:
        lab = state.read()
        entry = lab.node(node)
        if lab.backend == "vm":
            from pvc.installer.lab import vm

            argv = vm.ssh_argv(lab, entry, list(command), identity, user)
            os.execvp(argv[0], argv)
    except LabError as exc:
        _fail(exc)
    pid = init_pid(node)
    if pid is None:
        _fail(LabError(f"node '{node}' is powered off (pvc-lab start {node})"))
    argv = nsenter_argv(pid, list(command) or ["/bin/bash", "-l"])
    os.execvp(argv[0], argv)


@main.command("kill")
@click.argument("node")
def kill_cmd(node: str) -> None:
    """Hard power-off of NODE through its BMC (IPMI chassis power off)."""
    try:
        click.echo(bmc_power(state.read(), node, on=False))
    except LabError as exc:
        _fail(exc)


@main.command("start")
@click.argument("node")
def start_cmd(node: str) -> None:
    """Power NODE on through its BMC."""
    try:
        click.echo(bmc_power(state.read(), node, on=True))
    except LabError as exc:
        _fail(exc)


@main.command("down")
def down_cmd() -> None:
    """Power every node off and remove the lab's namespaces, loop devices and files."""
    from pvc.installer.lab.down import down

    try:
        down(say=click.echo)
    except LabError as exc:
        _fail(exc)
