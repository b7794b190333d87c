"""/provisioner/profiles: what `pvc vm create --profile` combines: a system template, and optionally a network
template, a storage template (or, for kind 'ova', an OVA), a userdata document, default arguments and extra
cloud-init meta-data."""

from __future__ import annotations

from pvc.api.resources.provisioner.crud import Kind, routes
from pvc.nodeos.provisioner import models, store

PROFILE = Kind(
    what="profile",
    path="/provisioner/profiles",
    param="profile",
    table=store.PROFILE,
    change=models.ProfileChange,
    refs="Every template, userdata document and OVA it names must exist (400 naming the field).",
)

ProfilesResource, ProfileResource = routes(PROFILE)
