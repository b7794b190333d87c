"""The virtual hardware of `pvc-lab`, in one place: `pvc config init --lab` writes configs that match it, and the
lab (pvc.installer.lab) builds it: MACs, TEST-NET addresses that live only inside the lab's namespaces, NIC names,
the simulated BMCs' credentials, and the disk names its data and OSD selectors match."""

from __future__ import annotations

MAC = "52:54:00:5c:{net:02x}:{node:02x}"
NETS = {"upstream": "192.0.2", "cluster": "198.51.100", "storage": "203.0.113"}
NICS = {"upstream": "eth0", "cluster": "eth1", "storage": "eth2"}

# A node whose [nodes.ipmi] gives no password (or no ipmi table at all) gets a BMC with these credentials.
BMC_USER = "admin"
BMC_PASSWORD = "pvc-lab-bmc"
BMC_PORT = 623

# Each lab disk carries the serial pvc-KIND-NODE (KIND: data, osd0, osd1, ..., spare0, config). Under QEMU, udev
# links a virtio disk as /dev/disk/by-id/virtio-SERIAL; the container backend binds its loop devices there.
BY_ID = "/dev/disk/by-id"
DATA_DISK = f"{BY_ID}/*pvc-data*"
OSD_DISK = f"{BY_ID}/*pvc-osd*"
SPARE_DISK = f"{BY_ID}/*pvc-spare*"


def mac(net_index: int, node_id: int) -> str:
    return MAC.format(net=net_index, node=node_id)


def disk_serial(kind: str, node: str) -> str:
    return f"pvc-{kind}-{node}"


def disk_by_id(kind: str, node: str) -> str:
    return f"{BY_ID}/virtio-{disk_serial(kind, node)}"
