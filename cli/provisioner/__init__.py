"""`pvc provisioner ...`: templates (system, network, storage), userdata documents, profiles and OVAs, one module each.
Base images are `pvc image` (cli/image.py)."""

from __future__ import annotations

import click

from pvc.cli.provisioner import ova, profiles, templates, userdata


@click.group()
def provisioner() -> None:
    """What VMs are made from: templates, cloud-init userdata, profiles and imported OVAs."""


provisioner.add_command(templates.template)
provisioner.add_command(userdata.userdata)
provisioner.add_command(profiles.profile)
provisioner.add_command(ova.ova)
