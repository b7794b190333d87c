"""VM disks on RBD: the libvirt secret holding the client.libvirt key, and the monitors QEMU dials.

The one place that defines the secret: pvcd defines it on its node's libvirtd at start (formation may call
`define_secret` too; it is idempotent). Its UUID and the key are derived from the join key, so every node defines
the same secret with no exchange. The disk XML that uses both is `vmrender.render`'s.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from pvc.config.secrets import LIBVIRT_CEPH_USER as CEPH_USER
from pvc.config.secrets import ceph_key, libvirt_secret_uuid

if TYPE_CHECKING:
    import libvirt

SECRET_USAGE = "client.libvirt secret"


def secret_xml(secret_uuid: str) -> str:
    return (
        f"<secret ephemeral='no' private='yes'><uuid>{secret_uuid}</uuid>"
        f"<usage type='ceph'><name>{SECRET_USAGE}</name></usage></secret>"
    )


def define_secret(conn: libvirt.virConnect, join_key: str) -> str:
    """Define (or refresh) the client.libvirt secret on a libvirt connection; returns its UUID."""
    secret_uuid = libvirt_secret_uuid(join_key)
    secret = conn.secretDefineXML(secret_xml(secret_uuid), 0)
    secret.setValue(base64.b64decode(ceph_key(join_key, "client." + CEPH_USER)), 0)
    return secret_uuid


def mons_from_conf(text: str) -> list[tuple[str, int]]:
    """The v1 monitor addresses of a ceph.conf's `mon host` (what QEMU's librbd dials)."""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip().replace("_", " ") != "mon host":
            continue
        out = []
        for group in value.replace("[", " ").replace("]", " ").split():
            for addr in group.split(","):
                addr = addr.strip()
                if not addr or addr.startswith("v2:"):
                    continue
                addr = addr.removeprefix("v1:").rsplit("/", 1)[0]
                host, _, port = addr.rpartition(":")
                out.append((host, int(port)) if host else (addr, 6789))
        return out
    return []
