"""libvirt accepts what `vmrender.render` makes: a real libvirtd (in a network namespace of its own, with the bridge of
one PVC network) defines a representative set of rendered definitions and starts firmware-only ones (no disk: RBD
disks need Ceph) under the accelerator that works here. libvirt's own normalised XML imports back to the same
definition."""

from __future__ import annotations

import contextlib
import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from pvc.config.load import load_text
from pvc.config.networks import bridge_name
from pvc.config.schema import ClusterFile, Node
from pvc.installer.lab.command import ip
from pvc.nodeos.state.vmdef import VmDefinition
from pvc.nodeos.state.vmimport import import_xml
from pvc.nodeos.state.vmrender import Q35_SPARE_PORTS, Host, render
from tests.harness import libvirtd
from tests.harness.cluster import JOIN_KEY, cluster_toml, kvm_usable
from tests.harness.netlab import kill_all_in
from tests.harness.ports import NS_PREFIX
from tests.harness.procs import Proc, wait_until

NETWORK = 100
SECRET = "3f1a1f8e-5b7e-4c1a-9a55-0d5b8e1f0a01"
MONS = (("192.0.2.11", 6789), ("192.0.2.12", 6789))


def one_node() -> tuple[ClusterFile, Node]:
    """A one-node cluster.toml and its node: what the libvirtd's configuration and certificates are rendered from."""
    cfg = load_text(cluster_toml(["vmxml"])).config
    assert cfg is not None
    return cfg, cfg.node("vmxml")


CFG, NODE = one_node()
LISTEN = str(NODE.ip.cluster)  # where the node's libvirtd listens (formation/libvirt.py)


@pytest.fixture(scope="module")
def node(workdir: Path, libvirt_cache: Path) -> Iterator[tuple[libvirt.virConnect, str, Path]]:
    """A libvirtd in namespace <prefix>-vmxml, whose only network is the bridge of PVC network 100."""
    ns = f"{NS_PREFIX}-vmxml"
    ip("netns", "del", ns, check=False)
    ip("netns", "add", ns)
    ip("-n", ns, "link", "set", "lo", "up")
    ip("-n", ns, "link", "add", bridge_name(NETWORK), "type", "bridge")
    ip("-n", ns, "link", "set", bridge_name(NETWORK), "up")
    ip("-n", ns, "addr", "add", f"{LISTEN}/24", "dev", bridge_name(NETWORK))  # libvirtd listens on an address
    root = libvirtd.prepare(workdir / "vmxml-libvirt", CFG, NODE, JOIN_KEY, libvirt_cache)
    proc = Proc("libvirtd", ["ip", "netns", "exec", ns, *libvirtd.command(root, "vmxml")], workdir / "vmxml.log")
    conn = None
    try:
        conn = wait_until("libvirtd", lambda: libvirt.open(libvirtd.socket_uri(root)), 60, 0.2, proc)
        yield conn, ns, workdir
    finally:
        if conn is not None:
            for dom in conn.listAllDomains():
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            conn.close()
        proc.stop()
        kill_all_in(ns)
        ip("netns", "del", ns, check=False)


def host(workdir: Path, name: str) -> Host:
    return Host(
        accelerator="kvm" if kvm_usable() else "tcg",
        ceph_monitors=MONS,
        ceph_secret_uuid=SECRET,
        console_log=str(workdir / f"{name}.console.log"),
    )


DEFINED = {
    "bios-pc-disks": VmDefinition.model_validate(
        {
            "name": "bios-pc-disks",
            "uuid": "8a6d2b44-6f0e-4a47-9d0e-0c4b9f4a0001",
            "description": "a VM with every kind of device",
            "memory_mib": 256,
            "vcpus": 2,
            "machine": "pc",
            "disks": [
                {"volume": "vms/root", "size": "10G"},
                {"volume": "vms/data", "bus": "scsi", "cache": "writeback", "discard": "ignore"},
                {"volume": "vms/seed", "device": "cdrom"},
            ],
            "nics": [
                {"network": NETWORK, "mac": "52:54:00:10:00:01"},
                {"network": 7, "model": "e1000e", "mac": "52:54:00:10:00:03"},
            ],
            "graphics": "vnc",
            "tags": ["web"],
            "placement": {"node_limit": ["n1"], "selector": "mem", "autostart": True},
            "migration": {"method": "live-only", "max_downtime_ms": 200, "timeout_s": 600},
        }
    ),
    "uefi-q35-disks": VmDefinition.model_validate(
        {
            "name": "uefi-q35-disks",
            "uuid": "8a6d2b44-6f0e-4a47-9d0e-0c4b9f4a0002",
            "memory_mib": 512,
            "vcpus": 4,
            "topology": {"sockets": 1, "cores": 2, "threads": 2},
            "machine": "q35",
            "firmware": "uefi",
            "boot": ["cdrom", "hd", "network"],
            "cpu_model": "qemu64",
            "disks": [
                {"volume": "vms/root"},
                {"volume": "vms/data", "bus": "scsi", "read_only": True},
                {"volume": "vms/logs", "bus": "sata"},
                {"volume": "vms/seed", "device": "cdrom", "bus": "scsi"},
            ],
            "nics": [{"network": NETWORK, "model": "rtl8139", "mac": "52:54:00:10:00:02"}],
            "graphics": "spice",
            "clock": "localtime",
        }
    ),
}


@pytest.mark.parametrize("name", sorted(DEFINED))
def test_libvirt_defines_a_rendered_definition_and_its_xml_imports_back(node, name):
    conn, _ns, workdir = node
    definition = DEFINED[name]
    dom = conn.defineXML(render(definition, host(workdir, name)))
    try:
        normalised = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        # libvirt's own output (KiB, versioned machine type, addresses, aliases, controllers) is PVC's again
        assert import_xml(normalised).model_dump() == definition.model_dump()
        root = ET.fromstring(normalised)
        assert root.find("devices/emulator").text == "/usr/bin/qemu-system-x86_64"
        assert root.find("seclabel") is None
        if definition.machine == "q35":
            ports = {
                int(c.attrib["index"]) for c in root.findall("devices/controller[@type='pci'][@model='pcie-root-port']")
            }
            used = {int(a.attrib["bus"], 16) for a in root.iter("address") if a.get("type") == "pci"}
            assert len(ports - used) >= Q35_SPARE_PORTS, "q35 VMs keep free PCIe ports for hot-plug"
    finally:
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_a_rendered_firmware_only_definition_starts(node, firmware):
    """No disk (they need Ceph): the firmware runs with PVC's devices, its NIC on the network's bridge, graphics on
    loopback. SeaBIOS runs on the accelerator that works here; OVMF runs under TCG, because this machine's nested
    KVM stops it with an emulation failure (DESIGN.md, machine facts) — on real hardware KVM runs it."""
    conn, ns, workdir = node
    name = f"start-{firmware}"
    definition = VmDefinition.model_validate(
        {
            "name": name,
            "uuid": f"8a6d2b44-6f0e-4a47-9d0e-0c4b9f4a01{len(firmware):02d}",
            "memory_mib": 128,
            "machine": "pc" if firmware == "bios" else "q35",
            "firmware": firmware,
            "nics": [{"network": NETWORK, "mac": "52:54:00:20:00:01"}],
            "graphics": "vnc",
        }
    )
    h = host(workdir, name)
    if firmware == "uefi":
        h = dataclasses.replace(h, accelerator="tcg")
    dom = conn.defineXML(render(definition, h))
    try:
        dom.create()
        live = ET.fromstring(dom.XMLDesc(0))
        assert live.get("type") == ("kvm" if h.accelerator == "kvm" else "qemu")
        graphics = live.find("devices/graphics")
        assert graphics.get("listen") == "127.0.0.1" and int(graphics.attrib["port"]) >= 5900
        tap = live.find("devices/interface/target").attrib["dev"]
        assert f"master {bridge_name(NETWORK)}" in ip("-n", ns, "link", "show", "dev", tap).stdout
        assert Path(h.console_log).exists(), "QEMU opened the console log PVC set"
        if firmware == "uefi":  # OVMF writes to the serial console: the log PVC set receives it
            wait_until("OVMF output in the console log", lambda: Path(h.console_log).stat().st_size > 0, 120)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert import_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).model_dump() == definition.model_dump()
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
