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

Machine = Literal["pc", "q35"]
"""A VM's machine type: i440FX or Q35."""

Firmware = Literal["bios", "uefi"]
"""A VM's firmware: SeaBIOS or OVMF (no secure boot)."""

BootDevice = Literal["hd", "cdrom", "network"]
Graphics = Literal["none", "vnc", "spice"]
"""A VM's graphical console, always on 127.0.0.1 (none: the serial console only)."""

SELECTORS: tuple[str, ...] = get_args(Selector)
VM_MIGRATION_METHODS: tuple[str, ...] = get_args(VmMigrationMethod)
MACHINES: tuple[str, ...] = get_args(Machine)
FIRMWARES: tuple[str, ...] = get_args(Firmware)
BOOT_DEVICES: tuple[str, ...] = get_args(BootDevice)
GRAPHICS: tuple[str, ...] = get_args(Graphics)
