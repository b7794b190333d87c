"""/provisioner/userdata: cloud-init user-data documents, stored as given once they are known to be one: a
`#cloud-config` YAML mapping or a MIME multipart message (pvc.nodeos.provisioner.userdata)."""

from __future__ import annotations

from pvc.api.resources.provisioner.crud import Kind, routes
from pvc.nodeos.provisioner import models, store

USERDATA = Kind(
    what="userdata document",
    path="/provisioner/userdata",
    param="userdata",
    model=models.Userdata,
    change=models.UserdataChange,
    view=models.UserdataView,
    summary=models.UserdataSummary,
    list=store.list_userdata,
    get=store.get_userdata,
    add=store.add_userdata,
    modify=store.modify_userdata,
    remove=store.remove_userdata,
    refs="The body must be a #cloud-config YAML mapping or a MIME multipart message (400 saying what is wrong).",
)

UserdataDocumentsResource, UserdataDocumentResource = routes(USERDATA)
