"""What the provisioner refuses, each mapped to one HTTP status by the API (pvc.api.errors)."""

from __future__ import annotations


class ProvisionerError(Exception):
    """Base of the provisioner's refusals; `field` names the request field at fault, when one is."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Missing(ProvisionerError):
    """No such template, userdata document, profile or image (404)."""


class Exists(ProvisionerError):
    """The name is taken (409)."""


class InUse(ProvisionerError):
    """Removing it would break what uses it; the message names them (409)."""


class Invalid(ProvisionerError):
    """Bad input, or a reference to something that does not exist; names the field (400)."""


class Unavailable(ProvisionerError):
    """The database cannot be reached, has no leader, or has a schema this PVC cannot use (503)."""
