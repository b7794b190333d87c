"""MAC addresses of VM NICs: every NIC has one in its VM's stored definition, unique in the cluster.

A NIC defined without a MAC gets one here: the cluster's prefix (`pvc.config.secrets.vm_mac_prefix`, three
locally administered octets derived from the join key) and three random octets, never one the MAC index
(layout.VM_MACS) or the definition itself already holds. The index is written in the same transaction as the VM,
so two VMs can never end up with one MAC.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from pvc.nodeos.state.vmdef import VmDefinition

ATTEMPTS = 64  # a free suffix is found at once until the cluster holds millions of MACs in its prefix


class NoFreeMac(Exception):
    """No free MAC was found in the cluster's prefix."""


def random_mac(prefix: str) -> str:
    return prefix + "".join(f":{b:02x}" for b in secrets.token_bytes(3))


def fill(definition: VmDefinition, prefix: str, taken: Callable[[str], bool]) -> tuple[VmDefinition, set[str]]:
    """`definition` with a MAC on every NIC, and the MACs made for it. A made MAC is never one `taken(mac)` says
    another VM holds, nor one of the definition's own."""
    if all(nic.mac for nic in definition.nics):
        return definition, set()
    used = {nic.mac for nic in definition.nics if nic.mac}
    made: set[str] = set()
    nics = []
    for nic in definition.nics:
        if nic.mac is None:
            mac = _free(prefix, lambda m: m in used or m in made or taken(m))
            made.add(mac)
            nic = nic.model_copy(update={"mac": mac})
        nics.append(nic.model_dump())
    return definition.changed(nics=nics), made


def _free(prefix: str, taken: Callable[[str], bool]) -> str:
    for _ in range(ATTEMPTS):
        mac = random_mac(prefix)
        if not taken(mac):
            return mac
    raise NoFreeMac(f"no free MAC address found in the cluster's prefix {prefix} after {ATTEMPTS} tries")
