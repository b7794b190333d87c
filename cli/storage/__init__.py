"""`pvc storage ...`: Ceph status, pools, volumes (with upload and download), snapshots and OSDs, one module each."""

from __future__ import annotations

import click

from pvc.cli.storage import osds, pools, snapshots, status, volumes


@click.group()
def storage() -> None:
    """Ceph storage: cluster status, pools, volumes (RBD images), snapshots and OSDs."""


storage.add_command(status.status)
storage.add_command(pools.pool)
storage.add_command(volumes.volume)
storage.add_command(snapshots.snapshot)
storage.add_command(osds.osd)
