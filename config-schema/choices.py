"""Enumerations shared by cluster.toml, the cluster state, the API and the CLI: each list of words is written here
once and imported everywhere else. Only `typing`, so the CLI can import it without slowing `pvc --help`.
"""

from __future__ import annotations

from typing import Literal, get_args

Selector = Literal["mem", "memprov", "vcpus", "load", "vms"]
"""How a node is chosen for a VM: most free memory, least provisioned memory, fewest vCPUs, lowest load, fewest VMs."""

MigrationMethod = Literal["live", "shutdown"]
"""The cluster's default migration method ([migration] method)."""

VmMigrationMethod = Literal["live", "live-only", "shutdown"]
"""A VM's own migration method: the cluster's choices, plus live-only (never fall back to shutting the VM down)."""

NetworkType = Literal["bridged", "managed"]
"""A client network: a VLAN of [network.bridged] that PVC only bridges, or a VXLAN that PVC routes and serves."""

NetworkOwner = Literal["config", "api"]
"""Who declared a network: cluster.toml's [[client_networks]] (changed only there) or the API."""

AclDirection = Literal["in", "out"]
"""in: traffic to the network's VMs (destination inside its subnet); out: traffic from them."""

AclAction = Literal["accept", "drop", "reject"]
AclPolicy = Literal["accept", "drop"]
"""What happens to a managed network's traffic that no ACL rule decides."""

AclProtocol = Literal["any", "tcp", "udp", "icmp", "icmpv6"]

SELECTORS: tuple[str, ...] = get_args(Selector)
VM_MIGRATION_METHODS: tuple[str, ...] = get_args(VmMigrationMethod)
NETWORK_TYPES: tuple[str, ...] = get_args(NetworkType)
ACL_DIRECTIONS: tuple[str, ...] = get_args(AclDirection)
ACL_ACTIONS: tuple[str, ...] = get_args(AclAction)
ACL_POLICIES: tuple[str, ...] = get_args(AclPolicy)
ACL_PROTOCOLS: tuple[str, ...] = get_args(AclProtocol)
