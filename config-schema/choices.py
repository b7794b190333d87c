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

Accelerator = Literal["kvm", "tcg"]
"""How a node runs VMs: KVM (hardware virtualization) or TCG (QEMU's emulation); cluster.toml's [vm] accelerator
adds 'auto', which each node resolves to one of these."""

Machine = Literal["pc", "q35"]
"""A VM's machine type: i440FX or Q35."""

Firmware = Literal["bios", "uefi"]
"""A VM's firmware: SeaBIOS or OVMF (no secure boot)."""

BootDevice = Literal["hd", "cdrom", "network"]
Graphics = Literal["none", "vnc", "spice"]
"""A VM's graphical console, always on 127.0.0.1 (none: the serial console only)."""

NicModel = Literal["virtio", "e1000e", "rtl8139"]
"""A VM NIC's emulated device."""

ImageFormat = Literal["raw", "qcow2", "vmdk"]
"""A disk image's format, as an upload declares it: raw bytes, or a single-file qcow2 or VMDK that qemu-img converts."""
ApiRole = Literal["read-only", "operator", "admin"]
"""What an API key may do (docs/security.md): read-only reads; operator also runs the VM lifecycle (start, stop,
restart, shutdown, migrate) and flushes and readies nodes; admin does everything. In increasing power."""

DEFAULT_API_ROLE: ApiRole = "read-only"
"""The role of an [api] key whose entry in cluster.toml names none: the least power (docs/security.md)."""

SELECTORS: tuple[str, ...] = get_args(Selector)
API_ROLES: tuple[str, ...] = get_args(ApiRole)
VM_MIGRATION_METHODS: tuple[str, ...] = get_args(VmMigrationMethod)
NETWORK_TYPES: tuple[str, ...] = get_args(NetworkType)
ACL_DIRECTIONS: tuple[str, ...] = get_args(AclDirection)
ACL_ACTIONS: tuple[str, ...] = get_args(AclAction)
ACL_POLICIES: tuple[str, ...] = get_args(AclPolicy)
ACL_PROTOCOLS: tuple[str, ...] = get_args(AclProtocol)
MACHINES: tuple[str, ...] = get_args(Machine)
FIRMWARES: tuple[str, ...] = get_args(Firmware)
BOOT_DEVICES: tuple[str, ...] = get_args(BootDevice)
GRAPHICS: tuple[str, ...] = get_args(Graphics)
NIC_MODELS: tuple[str, ...] = get_args(NicModel)
IMAGE_FORMATS: tuple[str, ...] = get_args(ImageFormat)
