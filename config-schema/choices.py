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

ImageFormat = Literal["raw", "qcow2", "vmdk"]
"""A disk image's format, as an upload declares it: raw bytes, or a single-file qcow2 or VMDK that qemu-img converts."""

SELECTORS: tuple[str, ...] = get_args(Selector)
VM_MIGRATION_METHODS: tuple[str, ...] = get_args(VmMigrationMethod)
IMAGE_FORMATS: tuple[str, ...] = get_args(ImageFormat)
