"""The cloud-init NoCloud seed of a created VM, as pure functions: `--arg` values put into the user-data, the
meta-data and network-config documents, and the `cidata` ISO that carries them.

cloud-init finds the seed by its volume label `cidata` and reads `meta-data`, `user-data` and `network-config` from
its root; the ISO has Joliet and Rock Ridge names so those names are read whole (ISO 9660 alone has no '-').
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import pycdlib
import yaml

from pvc.nodeos.provisioner.userdata import CLOUD_CONFIG, PLACEHOLDER, NotUserdata, classify

LABEL = "cidata"
BUILTINS = ("vm_name",)  # set by PVC, never by --arg
SEED_ALIGN = 1024 * 1024  # the seed volume's size is the ISO's, rounded up to this
# ISO 9660 level-1-style names (what a reader without Joliet/Rock Ridge sees), and the names cloud-init reads
FILES = {"meta-data": "/METADATA.;1", "user-data": "/USERDATA.;1", "network-config": "/NETCFG.;1"}


class SeedError(ValueError):
    """A user-data document the values cannot be put into; says which placeholder or what went wrong."""


def placeholders(text: str) -> list[str]:
    """The names of the `{{ name }}` placeholders in `text`, in order of first use."""
    return list(dict.fromkeys(PLACEHOLDER.findall(text)))


def substitute(text: str, values: Mapping[str, str]) -> str:
    """`text` with each `{{ name }}` replaced by its value; SeedError naming the first without one. The result is
    checked to be user-data still (a value must not break the document's YAML)."""
    missing = [name for name in placeholders(text) if name not in values]
    if missing:
        raise SeedError(
            f"the user-data uses {{{{ {missing[0]} }}}} but no value is given: add --arg {missing[0]}=VALUE "
            "(or a default in the profile's arguments)"
        )
    out = PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
    try:
        classify(out)
    except NotUserdata as exc:
        raise SeedError(f"with the --arg values put in, {exc}") from None
    return out


def with_ssh_keys(userdata: str | None, keys: Sequence[str]) -> str:
    """A `#cloud-config` document: `userdata` (or an empty one) with `keys` added to its ssh_authorized_keys."""
    doc: dict[str, Any] = {}
    if userdata is not None:
        if classify(userdata) != "cloud-config":
            raise SeedError("SSH keys can be added to a #cloud-config user-data only; put them in the multipart one")
        doc = yaml.safe_load(userdata.removeprefix("\ufeff")) or {}
    if keys:
        existing = doc.get("ssh_authorized_keys") or []
        if not isinstance(existing, list):
            raise SeedError("the user-data's ssh_authorized_keys is not a list")
        doc["ssh_authorized_keys"] = [*existing, *(k.strip() for k in keys)]
    if userdata is not None and not keys:
        return userdata
    return f"{CLOUD_CONFIG}\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def meta(instance_id: str, hostname: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The NoCloud meta-data: the instance id (the VM's UUID: a new VM is a new instance) and its hostname, then
    the profile's extra keys (which cannot set those)."""
    return {"instance-id": instance_id, "local-hostname": hostname, **extra}


def yaml_text(doc: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False)


def network_config(macs: Sequence[str]) -> str:
    """Network config version 2: each NIC matched by its MAC, named eth0, eth1, ... in order, and configured by
    DHCP (managed networks serve it; on a bridged network, the network's own DHCP)."""
    ethernets = {
        f"eth{i}": {"match": {"macaddress": mac.lower()}, "set-name": f"eth{i}", "dhcp4": True}
        for i, mac in enumerate(macs)
    }
    return yaml_text({"version": 2, "ethernets": ethernets})


def iso(files: Mapping[str, str]) -> bytes:
    """The `cidata` ISO holding `files` (names from FILES) at its root."""
    image = pycdlib.PyCdlib()
    image.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL)
    try:
        for name, text in files.items():
            data = text.encode()
            image.add_fp(io.BytesIO(data), len(data), FILES[name], rr_name=name, joliet_path=f"/{name}")
        out = io.BytesIO()
        image.write_fp(out)
    finally:
        image.close()
    return out.getvalue()


def read_iso(data: bytes) -> dict[str, str]:
    """The files at the root of an ISO by their Rock Ridge names (what cloud-init reads): the inverse of `iso`."""
    image = pycdlib.PyCdlib()
    image.open_fp(io.BytesIO(data))
    try:
        found: dict[str, str] = {}
        for child in image.list_children(rr_path="/"):
            if child.is_file():
                name = child.rock_ridge.name().decode()
                out = io.BytesIO()
                image.get_file_from_iso_fp(out, rr_path=f"/{name}")
                found[name] = out.getvalue().decode()
        return found
    finally:
        image.close()


def volume_size(data: bytes) -> int:
    return -(-len(data) // SEED_ALIGN) * SEED_ALIGN
