"""/provisioner/userdata: cloud-init user-data documents, stored as given once they are known to be one: a
`#cloud-config` YAML mapping or a MIME multipart message (pvc.nodeos.provisioner.userdata)."""

from __future__ import annotations

from pvc.api.resources.provisioner.crud import Kind, routes
from pvc.nodeos.provisioner import models, store

USERDATA = Kind(
    what="userdata document",
    path="/provisioner/userdata",
    param="userdata",
    table=store.USERDATA,
    change=models.UserdataChange,
    refs="The body must be a #cloud-config YAML mapping or a MIME multipart message (400 saying what is wrong).",
)

UserdataDocumentsResource, UserdataDocumentResource = routes(USERDATA)
