"""/provisioner: base images, system/network/storage templates, userdata documents and profiles, one module each.

They live in the provisioner's PostgreSQL database (pvc.nodeos.provisioner); images also in Ceph. Names follow
pvc.config.names. A reference to a missing object is 400 naming the field; removing an object something uses is 409
naming the users; a taken name 409; unknown objects 404; the database unreachable or without a leader 503.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from pvc.api.spec import RequestInvalid, validation_message
from pvc.nodeos.provisioner.models import changed

TAGS = ["provisioner"]
M = TypeVar("M", bound=BaseModel)


def applying(change: BaseModel, check: Callable[[M], None]) -> Callable[[M], M]:
    """What a PATCH does to the stored object, inside the transaction that reads it: `change`'s fields applied, the
    result validated as a whole (400 naming the field) and its references checked by `check`."""

    def apply(current: M) -> M:
        try:
            new = changed(current, change)
        except ValidationError as exc:
            raise RequestInvalid(*validation_message(exc)) from None
        check(new)
        return new

    return apply
