"""VM disks on RBD: the libvirt secret holding the client.libvirt key, and the network-disk XML that uses it.

The one place that defines the secret: pvcd defines it on its node's libvirtd at start (formation may call
`define_secret` too; it is idempotent). Its UUID and the key are derived from the join key, so every node defines
the same secret with no exchange.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

from pvc.config.secrets import LIBVIRT_CEPH_USER as CEPH_USER
from pvc.config.secrets import ceph_key, libvirt_secret_uuid

SECRET_USAGE = "client.libvirt secret"


def secret_xml(secret_uuid: str) -> str:
    return (
        f"<secret ephemeral='no' private='yes'><uuid>{secret_uuid}</uuid>"
        f"<usage type='ceph'><name>{SECRET_USAGE}</name></usage></secret>"
    )


def define_secret(conn, join_key: str) -> str:  # type: ignore[no-untyped-def]
    """Define (or refresh) the client.libvirt secret on a libvirt connection; returns its UUID."""
    secret_uuid = libvirt_secret_uuid(join_key)
    secret = conn.secretDefineXML(secret_xml(secret_uuid), 0)
    secret.setValue(base64.b64decode(ceph_key(join_key, "client." + CEPH_USER)), 0)
    return secret_uuid


def disk_xml(pool: str, volume: str, mons: list[tuple[str, int]], secret_uuid: str, target: str = "vda") -> str:
    """A virtio network disk on pool/volume (raw, no host cache: safe for live migration)."""
    hosts = "".join(f"<host name='{h}' port='{p}'/>" for h, p in mons)
    return (
        "<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none' discard='unmap'/>"
        f"<auth username='{CEPH_USER}'><secret type='ceph' uuid='{secret_uuid}'/></auth>"
        f"<source protocol='rbd' name='{pool}/{volume}'>{hosts}</source>"
        f"<target dev='{target}' bus='virtio'/></disk>"
    )


def complete_disks(xml: str, mons: list[tuple[str, int]], secret_uuid: str) -> str:
    """The domain XML with every RBD disk given the cluster's monitors and the client.libvirt secret where it
    names none: administrators write only `<source protocol='rbd' name='pool/volume'/>`."""
    root = ET.fromstring(xml)
    changed = False
    for disk in root.findall("./devices/disk[@type='network']"):
        source = disk.find("source[@protocol='rbd']")
        if source is None:
            continue
        if source.find("host") is None:
            for host, port in mons:
                ET.SubElement(source, "host", {"name": host, "port": str(port)})
            changed = True
        if disk.find("auth") is None:
            auth = ET.Element("auth", {"username": CEPH_USER})
            ET.SubElement(auth, "secret", {"type": "ceph", "uuid": secret_uuid})
            disk.insert(0, auth)
            changed = True
    return ET.tostring(root, encoding="unicode") if changed else xml


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
