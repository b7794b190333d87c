"""`pvc provisioner ...`: templates (system, network, storage), userdata documents and profiles, one module each.
Base images are `pvc image` (cli/image.py)."""

from __future__ import annotations

import click

from pvc.cli.provisioner import profiles, templates, userdata


@click.group()
def provisioner() -> None:
    """What VMs are made from: templates, cloud-init userdata and profiles."""


provisioner.add_command(templates.template)
provisioner.add_command(userdata.userdata)
provisioner.add_command(profiles.profile)
