"""The metadata service's answers, as pure functions: a request path and the calling VM -> status and document.

The primary serves this at http://169.254.169.254/ on every managed network (pvc.nodeos.daemon.metadata; docs/
networks.md, docs/provisioner.md). Two layouts, with the same data as the VM's NoCloud seed:

- EC2, what cloud-init's Ec2 datasource reads (and the original PVC serves): `/<version>/meta-data/` lists
  `instance-id`, `name`, `hostname`, `local-hostname`, `local-ipv4`, `profile`, `public-keys/` and the profile's extra
  scalar meta-data keys, each readable at `/<version>/meta-data/<key>`; `/<version>/user-data`. `<version>` is
  `latest` or any date (cloud-init asks for several).
- NoCloud-net, under `/nocloud/`: `meta-data` (YAML), `user-data`, `vendor-data` (empty), `network-config`; a guest
  uses it with `ds=nocloud-net;s=http://169.254.169.254/nocloud/`.

The caller is known by the MAC of its NIC (never by a path component); an unknown caller gets 404 on every path.
A guest that answers ARP for another VM's address can read that VM's documents (docs/networks.md): keep secrets
out of user-data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from pvc.nodeos.state.models import VmSeed

ADDRESS = "169.254.169.254"  # on each managed network's bridge, on the primary only
PORT = 80
NOCLOUD = "nocloud"
VERSION = re.compile(r"^(latest|\d{4}-\d{2}-\d{2})$")
TEXT = "text/plain; charset=utf-8"
PUBLIC_KEYS = "public-keys"

Tree = Mapping[str, "str | Tree"]


@dataclass(frozen=True)
class Instance:
    """The VM that called: found by its NIC's MAC on the bridge the request came in on."""

    uuid: str
    name: str  # its name now (a rename shows here; the seed keeps the name it was created with)
    local_ipv4: str  # the address the request came from
    seed: VmSeed | None  # None for a VM the provisioner did not create


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    content_type: str = TEXT


NOT_FOUND = Answer(404, "not found\n")


def meta_data(inst: Instance) -> dict[str, Any]:
    """The NoCloud meta-data: the seed's, with the VM's identity as it is now."""
    extra = dict(inst.seed.meta_data) if inst.seed else {}
    return {**extra, "instance-id": inst.uuid, "local-hostname": inst.name}


def public_keys(meta: Mapping[str, Any]) -> list[str]:
    """The SSH keys of the meta-data's `public-keys` (NoCloud takes a string, a list, or a mapping of either)."""
    value = meta.get(PUBLIC_KEYS)
    values = list(value.values()) if isinstance(value, Mapping) else [value]
    keys: list[str] = []
    for item in values:
        for key in item if isinstance(item, list) else [item]:
            if isinstance(key, str) and key.strip():
                keys.append(key.strip())
    return keys


def _key_name(key: str, index: int) -> str:
    fields = key.split(None, 2)
    return fields[2].replace("\n", " ") if len(fields) == 3 else f"key{index}"


def ec2_tree(inst: Instance) -> dict[str, Any]:
    """The EC2 meta-data tree: a leaf is a string, a folder a dict."""
    meta = meta_data(inst)
    tree: dict[str, Any] = {
        key: str(value)
        for key, value in meta.items()
        if isinstance(value, str | int | float | bool) and "/" not in key and key != PUBLIC_KEYS
    }
    tree.update(
        {
            "instance-id": inst.uuid,
            "name": inst.name,
            "hostname": inst.name,
            "local-hostname": inst.name,
            "local-ipv4": inst.local_ipv4,
        }
    )
    if inst.seed and inst.seed.profile:
        tree["profile"] = inst.seed.profile
    keys = public_keys(meta)
    if keys:
        tree[PUBLIC_KEYS] = {str(i): {"openssh-key": key} for i, key in enumerate(keys)}
    return tree


def _listing(node: Mapping[str, Any], public: bool) -> str:
    """A folder as EC2 lists it: one name a line, a sub-folder with '/'; public-keys as `0=name`."""
    if public:
        return "".join(f"{i}={_key_name(v['openssh-key'], int(i))}\n" for i, v in node.items())
    return "".join(f"{k}/\n" if isinstance(v, Mapping) else f"{k}\n" for k, v in sorted(node.items()))


def _walk(tree: Mapping[str, Any], parts: list[str]) -> Answer:
    node: str | Mapping[str, Any] = tree
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return NOT_FOUND
        node = node[part]
    if isinstance(node, Mapping):
        return Answer(200, _listing(node, parts == [PUBLIC_KEYS]))
    return Answer(200, node)


def _nocloud(name: str, inst: Instance) -> Answer:
    seed = inst.seed
    if name == "meta-data":
        return Answer(200, yaml.safe_dump(meta_data(inst), sort_keys=False, default_flow_style=False))
    if name == "user-data":
        return Answer(200, seed.user_data if seed else "")
    if name == "vendor-data":
        return Answer(200, "")
    if name == "network-config" and seed and seed.network_config:
        return Answer(200, seed.network_config)
    return NOT_FOUND


def answer(path: str, inst: Instance | None) -> Answer:
    """What GET `path` (query string and all) returns to `inst`: 404 for an unknown caller or path."""
    if inst is None:
        return NOT_FOUND
    path = path.split("?", 1)[0].split("#", 1)[0]
    parts = path.split("/")[1:]  # "/latest/meta-data/" -> ["latest", "meta-data", ""]
    trailing = bool(parts) and parts[-1] == ""
    parts = [p for p in parts if p]
    if not parts:
        return Answer(200, "latest\n")
    if parts[0] == NOCLOUD:
        return _nocloud(parts[1], inst) if len(parts) == 2 and not trailing else NOT_FOUND
    if not VERSION.match(parts[0]):
        return NOT_FOUND
    seed = inst.seed
    has_user_data = bool(seed and seed.user_data)
    if len(parts) == 1:
        return Answer(200, "meta-data\n" + ("user-data\n" if has_user_data else ""))
    if parts[1] == "user-data" and len(parts) == 2:
        return Answer(200, seed.user_data) if seed and has_user_data else NOT_FOUND
    if parts[1] == "meta-data":
        return _walk(ec2_tree(inst), parts[2:])
    return NOT_FOUND
