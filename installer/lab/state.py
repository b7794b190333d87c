"""What a lab is, as typed records: lab.json (what `up` created, for every later command and for `down`) and each
node's power.json (written by its supervisor). Also where the lab's files and its example configs are.

The example configs are package data (pvc/installer/lab/configs/), so `pvc-lab up` works from any install.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from pvc.installer.lab.command import LabError

LAB_DIR = Path(os.environ.get("PVC_LAB_DIR", "/var/lib/pvc-lab"))
LAB_NS = os.environ.get("PVC_LAB_NS", "pvclab")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
# the vm backend's NICs get the names udev gives them under QEMU (enp0s16...; see vm.nic_name)
EXAMPLE_CONFIGS = {
    "container": {1: "lab-1node.toml", 3: "lab-3node.toml"},
    "vm": {1: "lab-vm-1node.toml", 3: "lab-vm-3node.toml"},
}

Backend = Literal["container", "vm"]
BOOT_MODES = (
    "kernel",
    "usb-uefi",
    "usb-bios",
    "iso-uefi",
    "iso-bios",
    "pxe-bios",
    "pxe-uefi",
)  # how the vm backend boots


def example_config(backend: str, nodes: int) -> Path:
    name = EXAMPLE_CONFIGS[backend].get(nodes)
    if name is None:
        raise LabError(f"there is no example config for {nodes} nodes; write one (pvc config init) and pass --config")
    return CONFIG_DIR / name


class Bmc(BaseModel):
    address: str
    port: int
    username: str
    password: str


class Nic(BaseModel):
    name: str  # as the node sees it
    bridge: str  # the lab bridge it is plugged into
    mac: str


class Disks(BaseModel):
    data: str
    osds: list[str]
    config: str


class KernelBoot(BaseModel):
    kernel: str
    initrd: str
    append: str


class Medium(BaseModel):
    kind: Literal["disk", "usb", "cdrom"]
    path: str


class Vm(BaseModel):
    """How QEMU runs one vm-backend node; `argv` is the full command line (qemu_argv of the rest)."""

    boot: str
    accel: Literal["kvm", "tcg"]
    memory_mib: int
    smp: int
    firmware: Literal["uefi", "bios"]
    ovmf_vars: str | None = None
    kernel: KernelBoot | None = None
    medium: Medium | None = None
    argv: list[str] = []


class LabNode(BaseModel):
    name: str
    id: int
    netns: str
    console_log: str
    dir: str
    disks: Disks
    nics: list[Nic]
    ip: str  # upstream address
    bmc: Bmc
    binds: list[tuple[str, str]] = []  # container backend: (host device, path in the node)
    vm: Vm | None = None  # vm backend
    supervisor_pid: int | None = None


class Pxe(BaseModel):
    dir: str
    pids: list[int]
    dhcp_range: tuple[str, str]
    url: str


class Upstream(BaseModel):
    """The lab's upstream router and world (upstream.py)."""

    router_ns: str
    world_ns: str
    address: str  # the router's upstream address
    asn: int
    world_address: str
    pids: list[int] = []  # the router's zebra and bgpd


class Lab(BaseModel):
    backend: Backend
    boot: str
    config: str  # the cluster.toml it was brought up with
    lab_ns: str
    root: str  # container backend: where the squashfs is mounted
    api_port: int
    started: float
    nodes: list[LabNode] = []
    loops: list[str] = []
    mounted: bool = False
    bridges: dict[str, str] = {}  # network role -> bridge name
    forward_pid: int | None = None
    pxe: Pxe | None = None
    upstream: Upstream | None = None

    def node(self, name: str) -> LabNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise LabError(f"no node '{name}' in this lab (nodes: {', '.join(n.name for n in self.nodes)})")


class Power(BaseModel):
    """A node's power as its supervisor last wrote it."""

    power: Literal["on", "off"]
    nspawn_pid: int | None = None  # the machine's process (nspawn or QEMU)
    init_pid: int | None = None  # the node's init on the host (container backend), else the machine's process
    updated: float


def lab_file(labdir: Path = LAB_DIR) -> Path:
    return labdir / "lab.json"


def make_dir(labdir: Path = LAB_DIR) -> None:
    """The lab's folder, readable by root only: it holds the BMC passwords and the nodes' disks."""
    labdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    labdir.chmod(0o700)


def read(labdir: Path = LAB_DIR) -> Lab:
    path = lab_file(labdir)
    try:
        return Lab.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise LabError(f"no lab is up (no {path}); start one with: pvc-lab up") from None
    except ValidationError as exc:
        raise LabError(
            f"{path} is not a lab record this pvc-lab understands ({exc.error_count()} problem(s), first: "
            f"{'.'.join(map(str, exc.errors()[0]['loc']))}: {exc.errors()[0]['msg']})"
        ) from None


def save(lab: Lab, labdir: Path = LAB_DIR) -> None:
    tmp = labdir / ".lab.json"
    tmp.write_text(lab.model_dump_json(indent=1))
    tmp.replace(lab_file(labdir))


def power_file(labdir: Path, name: str) -> Path:
    return labdir / name / "power.json"


def write_power(labdir: Path, name: str, power: Power) -> None:
    path = power_file(labdir, name)
    tmp = path.with_name("." + path.name)
    tmp.write_text(power.model_dump_json())
    tmp.replace(path)


def power(labdir: Path = LAB_DIR) -> dict[str, Power]:
    """node -> its power, as each node's supervisor last wrote it."""
    out = {}
    for path in labdir.glob("*/power.json"):
        try:
            out[path.parent.name] = Power.model_validate_json(path.read_text())
        except (OSError, ValueError):
            continue
    return out
