"""`pvcd`, the node daemon: keepalive, coordinator election, VM controller, flush/ready, fencing."""

from __future__ import annotations

import faulthandler
import logging
import shlex
import signal
import sys
from pathlib import Path

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    default="/run/pvc/cluster.toml",
    show_default=True,
    help="The cluster.toml this node booted with.",
)
@click.option("--node", "node_name", required=True, help="This node's name in cluster.toml.")
@click.option("--state-dir", default="/var/lib/pvc", show_default=True)
@click.option("--zookeeper", default=None, help="ZooKeeper hosts (default: the coordinators' cluster IPs).")
@click.option("--libvirt-uri", default="qemu:///system", show_default=True)
@click.option(
    "--migration-uri",
    default="qemu+tls://{ip}/system",
    show_default=True,
    help="libvirt URI of a migration target; {ip} is its cluster IP (TLS with the node certificates).",
)
@click.option(
    "--ceph-conf",
    default="/etc/ceph/ceph.conf",
    show_default=True,
    help="ceph.conf for RBD lock checks, fencing and the storage status (its keyring: client.admin).",
)
@click.option(
    "--run-dir",
    default="/run/pvc",
    show_default=True,
    help="Runtime files: the client networks' dnsmasq files and nftables, the lease hook's socket.",
)
@click.option("--frr-pathspace", default=None, help="vtysh -N PATHSPACE: talk to that FRR instance (tests).")
@click.option(
    "--disk",
    "disks",
    multiple=True,
    help="A file system whose use the keepalive reports, with a fault above 80% (repeat; default: PVCDATA and /).",
)
@click.option(
    "--libvirt-restart-command",
    default="systemctl restart pvc-libvirtd.service",
    show_default=True,
    help="How pvcd restarts a libvirtd that answers nothing for timers.libvirt_restart_after seconds.",
)
@click.option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def main(
    config_path: str,
    node_name: str,
    state_dir: str,
    zookeeper: str | None,
    libvirt_uri: str,
    migration_uri: str,
    ceph_conf: str,
    run_dir: str,
    frr_pathspace: str | None,
    disks: tuple[str, ...],
    libvirt_restart_command: str,
    log_level: str,
) -> None:
    """Run this node's PVC daemon in the foreground."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # `kill -USR2`: every thread's stack to the journal
    logging.getLogger("kazoo").setLevel(logging.WARNING)
    # Imported here: this __init__ runs before every pvc.nodeos.daemon module (service.py imports them, so a top
    # import would be circular), and `pvcd --help` needs neither pydantic nor libvirt.
    from pvc.config.load import load

    result = load(config_path)
    if not result.valid:
        for problem in result.errors:
            click.echo(problem.format(config_path), err=True)
        sys.exit(1)
    cfg = result.config
    assert cfg is not None
    if node_name not in [n.name for n in cfg.nodes]:
        click.echo(f"pvcd: no node '{node_name}' in {config_path}", err=True)
        sys.exit(1)
    from pvc.nodeos.daemon.service import Daemon, Options

    opts = Options(
        node=node_name,
        state_dir=state_dir,
        zookeeper=zookeeper,
        libvirt_uri=libvirt_uri,
        migration_uri=migration_uri,
        ceph_conf=ceph_conf,
        run_dir=run_dir,
        frr_pathspace=frr_pathspace,
        libvirt_restart=tuple(shlex.split(libvirt_restart_command)),
        disks=disks or Options.disks,
    )
    try:
        daemon = Daemon(cfg, Path(config_path).resolve().parent, opts)
    except ValueError as exc:  # e.g. an unreadable join_key_file: say which file, no traceback
        click.echo(f"pvcd: {exc}", err=True)
        sys.exit(1)
    daemon.install_signals()
    daemon.run()
