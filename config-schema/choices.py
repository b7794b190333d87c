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

ApiRole = Literal["read-only", "operator", "admin"]
"""What an API key may do (docs/security.md): read-only reads; operator also runs the VM lifecycle (start, stop,
restart, shutdown, migrate) and flushes and readies nodes; admin does everything. In increasing power."""

DEFAULT_API_ROLE: ApiRole = "read-only"
"""The role of an [api] key whose entry in cluster.toml names none: the least power (docs/security.md)."""

SELECTORS: tuple[str, ...] = get_args(Selector)
API_ROLES: tuple[str, ...] = get_args(ApiRole)
VM_MIGRATION_METHODS: tuple[str, ...] = get_args(VmMigrationMethod)
