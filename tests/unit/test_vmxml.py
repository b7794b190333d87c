"""Domain XML from a VM definition and back (nodeos/state/vmrender.py, vmimport.py): what PVC always sets, the
allowlist importer refusing every hostile class of the security review's C1 with its XML path, round trips, and
libvirt's own schema (virt-xml-validate) accepting what is rendered."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvc.config.names import NAME_PATTERN
from pvc.config.networks import MAX_VNI, bridge_name
from pvc.nodeos.state import vmdef
from pvc.nodeos.state.vmdef import VmDefinition
from pvc.nodeos.state.vmimport import MAX_XML, QEMU_NS, VmXmlError, import_xml
from pvc.nodeos.state.vmrender import EMULATOR, PVC_NS, Host, render

SECRET = "0b7a5c52-7f0c-4c38-9d44-3c4d2c1e9a01"
MONS = (("192.0.2.11", 6789), ("192.0.2.12", 6789), ("192.0.2.13", 6789))
KVM = Host("kvm", MONS, SECRET, "/var/lib/pvc/console/c0ffee.log")
TCG = Host("tcg", MONS, SECRET, "/var/lib/pvc/console/c0ffee.log")

FULL = VmDefinition.model_validate(
    {
        "name": "web1",
        "uuid": "c0ffee00-0000-4000-8000-000000000001",
        "description": "the web server\nsecond line",
        "vcpus": 4,
        "topology": {"sockets": 2, "cores": 2, "threads": 1},
        "memory_mib": 2048,
        "machine": "q35",
        "firmware": "uefi",
        "boot": ["cdrom", "hd"],
        "disks": [
            {"volume": "vms/web1_root", "size": "20G"},
            {"volume": "vms/web1_data", "bus": "scsi", "cache": "writeback", "discard": "ignore"},
            {"volume": "vms/web1_seed", "device": "cdrom"},
            {"volume": "vms/web1_logs", "bus": "sata"},
        ],
        "nics": [{"network": 100, "mac": "52:54:00:12:34:56"}, {"network": 4094, "model": "e1000e"}],
        "graphics": "vnc",
        "tags": ["web", "prod"],
        "placement": {"node_limit": ["n1", "n2"], "selector": "vcpus", "autostart": True},
        "migration": {"method": "shutdown", "max_downtime_ms": 250, "timeout_s": 120},
    }
)


def minimal(devices: str = "", top: str = "", os: str = "") -> str:
    return (
        "<domain type='kvm'><name>v</name><memory unit='MiB'>256</memory>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type>{os}</os>{top}<devices>{devices}</devices></domain>"
    )


RBD = "<disk type='network' device='disk'><source protocol='rbd' name='vms/ok'/><target dev='vda' bus='virtio'/></disk>"


# -- render: what PVC always sets ------------------------------------------------------------------------------
def test_render_is_deterministic():
    assert render(FULL, KVM) == render(FULL, KVM)
    assert render(FULL, KVM) == render(VmDefinition.model_validate_json(FULL.model_dump_json()), KVM)


def test_render_sets_what_a_user_must_not():
    root = ET.fromstring(render(FULL, KVM))
    assert root.get("type") == "kvm"
    assert root.find("devices/emulator").text == EMULATOR
    assert not list(root.iter("seclabel"))
    assert not [el for el in root.iter() if el.tag.startswith(f"{{{QEMU_NS}}}")]
    serials = root.findall("devices/serial")
    assert [s.get("type") for s in serials] == ["pty"]
    assert serials[0].find("log").attrib == {"file": KVM.console_log, "append": "on"}
    assert root.find("devices/console").get("type") == "pty"
    graphics = root.find("devices/graphics")
    assert graphics.get("listen") == "127.0.0.1" and graphics.find("listen").get("address") == "127.0.0.1"
    for disk in root.findall("devices/disk"):
        assert disk.get("type") == "network"
        assert disk.find("source").get("protocol") == "rbd"
        assert [(h.get("name"), int(h.attrib["port"])) for h in disk.findall("source/host")] == list(MONS)
        assert disk.find("auth").get("username") == "libvirt"
        assert disk.find("auth/secret").attrib == {"type": "ceph", "uuid": SECRET}
        assert disk.find("driver").get("type") == "raw"
    assert [(i.get("type"), i.find("source").get("bridge")) for i in root.findall("devices/interface")] == [
        ("bridge", "vmbr100"),
        ("bridge", "vmbr4094"),
    ]
    assert root.find("os/loader").text == KVM.uefi_code
    assert root.find("os/nvram").get("template") == KVM.uefi_vars and not root.find("os/nvram").text
    assert [b.get("dev") for b in root.findall("os/boot")] == ["cdrom", "hd"]
    assert root.find("devices/channel/target").get("name") == "org.qemu.guest_agent.0"
    assert root.find("devices/rng/backend").text == "/dev/urandom"


def test_render_disk_targets_and_buses():
    root = ET.fromstring(render(FULL, KVM))
    targets = [(d.find("target").get("dev"), d.find("target").get("bus")) for d in root.findall("devices/disk")]
    assert targets == [("vda", "virtio"), ("sda", "scsi"), ("sdb", "sata"), ("sdc", "sata")]
    assert root.find("devices/disk[3]").get("device") == "cdrom"
    assert root.find("devices/disk[3]/readonly") is not None and root.find("devices/disk[1]/readonly") is None
    assert root.find("devices/controller[@type='scsi']").get("model") == "virtio-scsi"
    many = FULL.changed(disks=[{"volume": f"p/d{i}"} for i in range(vmdef.MAX_DISKS)])
    names = [d.find("target").get("dev") for d in ET.fromstring(render(many, KVM)).findall("devices/disk")]
    assert names[0] == "vda" and names[-1] == "vdp" and len(set(names)) == vmdef.MAX_DISKS


def test_kvm_passes_the_host_cpu_through_unless_a_model_is_set():
    cpu = ET.fromstring(render(FULL, KVM)).find("cpu")
    assert cpu.get("mode") == "host-passthrough" and cpu.get("migratable") == "on"
    assert cpu.find("feature").attrib == {"policy": "disable", "name": "arch-capabilities"}
    assert cpu.find("topology").attrib == {"sockets": "2", "cores": "2", "threads": "1"}
    named = ET.fromstring(render(FULL.changed(cpu_model="EPYC"), KVM)).find("cpu")
    assert named.get("mode") == "custom" and named.find("model").text == "EPYC" and named.find("feature") is None


def test_tcg_runs_a_model_tcg_can_run():
    root = ET.fromstring(render(FULL, TCG))
    assert root.get("type") == "qemu"
    assert root.find("cpu").get("mode") == "custom" and root.find("cpu/model").text == "qemu64"
    assert root.find("cpu/feature") is None
    assert ET.fromstring(render(FULL.changed(cpu_model="Nehalem"), TCG)).find("cpu/model").text == "Nehalem"


def test_q35_keeps_free_pcie_ports_for_hotplug():
    root = ET.fromstring(render(FULL, KVM))
    ports = root.findall("devices/controller[@model='pcie-root-port']")
    assert root.find("devices/controller[@model='pcie-root']").get("index") == "0"
    # 2 NICs + 1 virtio disk + virtio-scsi + rng + virtio-serial + balloon = 7 used, 4 free
    assert [p.get("index") for p in ports] == [str(i) for i in range(1, 12)]
    assert not ET.fromstring(render(FULL.changed(machine="pc"), KVM)).findall("devices/controller[@type='pci']")


def test_optional_devices_are_left_out():
    bare = VmDefinition(name="bare", memory_mib=64, serial_console=False, rng=False, guest_agent=False)
    devices = ET.fromstring(render(bare, KVM)).find("devices")
    assert {el.tag for el in devices} == {"emulator", "controller", "memballoon"}


def test_seabios_prints_on_the_serial_console_when_there_is_one():
    def bios(d: VmDefinition) -> list[dict[str, str]]:
        return [el.attrib for el in ET.fromstring(render(d, KVM)).findall("os/bios")]

    assert bios(VmDefinition(name="b", memory_mib=64)) == [{"useserial": "yes"}]
    assert bios(VmDefinition(name="b", memory_mib=64, serial_console=False)) == []
    assert bios(VmDefinition(name="b", memory_mib=64, firmware="uefi")) == []  # OVMF prints there by itself
    imported = import_xml(minimal(os="<bios useserial='no' rebootTimeout='0'/>"))  # PVC's own choice replaces it
    assert imported == import_xml(minimal())
    with pytest.raises(VmXmlError, match="os/bios/@useserial: 'maybe'"):
        import_xml(minimal(os="<bios useserial='maybe'/>"))


def test_host_is_checked():
    with pytest.raises(ValueError, match="accelerator"):
        Host("xen", MONS, SECRET, "/l")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="emulator"):
        Host("kvm", MONS, SECRET, "/l", emulator="/bin/sh")
    with pytest.raises(ValueError, match="UEFI"):
        Host("kvm", MONS, SECRET, "/l", uefi_code="/etc/shadow")
    with pytest.raises(ValueError, match="console log"):
        Host("kvm", MONS, SECRET, "relative.log")


def test_bridge_name():
    assert bridge_name(100) == "vmbr100" and len(bridge_name(MAX_VNI)) <= 15


# -- round trips ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", [KVM, TCG], ids=["kvm", "tcg"])
def test_full_definition_round_trips(host):
    assert import_xml(render(FULL, host)) == FULL
    minimal_def = VmDefinition(name="m", memory_mib=64)
    assert import_xml(render(minimal_def, host)) == minimal_def


def _mac(n: int) -> str:
    octets = [(n >> (8 * i)) & 0xFF for i in range(6)]
    octets[0] = (octets[0] & 0xFE) | 0x02  # unicast, locally administered, never all-zero
    return ":".join(f"{o:02x}" for o in octets)


names = st.from_regex(NAME_PATTERN.replace("{0,63}", "{0,12}"), fullmatch=True)


@st.composite
def definitions(draw: st.DrawFn) -> VmDefinition:
    vcpus = draw(st.integers(1, vmdef.MAX_VCPUS))
    topology = None
    if draw(st.booleans()):
        threads = draw(st.sampled_from([t for t in range(1, 9) if vcpus % t == 0]))
        cores = draw(st.sampled_from([c for c in range(1, vcpus // threads + 1) if (vcpus // threads) % c == 0]))
        topology = {"sockets": vcpus // threads // cores, "cores": cores, "threads": threads}
    disks: list[dict[str, Any]] = []
    for i in range(draw(st.integers(0, 5))):
        device = draw(st.sampled_from(["disk", "cdrom"]))
        bus = draw(st.sampled_from(["sata", "scsi"] if device == "cdrom" else ["virtio", "scsi", "sata"]))
        disk: dict[str, Any] = {"volume": f"{draw(names)}/{draw(names)}{i}", "device": device, "bus": bus}
        disk["cache"] = draw(st.sampled_from(["none", "writeback", "writethrough", "directsync"]))
        disk["discard"] = draw(st.sampled_from(["unmap", "ignore"]))
        disk["size"] = draw(st.none() | st.integers(1, vmdef.MAX_DISK_BYTES))
        if device == "disk" and bus != "sata":
            disk["read_only"] = draw(st.booleans())
        disks.append(disk)
    macs = draw(st.lists(st.integers(0, 2**48 - 1), max_size=4, unique_by=lambda n: _mac(n)))
    nics = [
        {
            "network": draw(st.integers(1, MAX_VNI)),
            "mac": draw(st.sampled_from([_mac(m), None])),
            "model": draw(st.sampled_from(["virtio", "e1000e", "rtl8139"])),
        }
        for m in macs
    ]
    text = st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Cn", "Co")) | st.sampled_from("\n\t"))
    return VmDefinition.model_validate(
        {
            "name": draw(names),
            "uuid": draw(st.none() | st.uuids().map(str)),
            "description": draw(text.filter(lambda s: len(s) <= vmdef.MAX_DESCRIPTION)),
            "vcpus": vcpus,
            "topology": topology,
            "memory_mib": draw(st.integers(vmdef.MIN_MEMORY_MIB, vmdef.MAX_MEMORY_MIB)),
            "machine": draw(st.sampled_from(["pc", "q35"])),
            "firmware": draw(st.sampled_from(["bios", "uefi"])),
            "boot": draw(st.lists(st.sampled_from(["hd", "cdrom", "network"]), min_size=1, max_size=3, unique=True)),
            "cpu_model": draw(st.none() | st.sampled_from(["qemu64", "EPYC", "Skylake-Server-IBRS", "max"])),
            "clock": draw(st.sampled_from(["utc", "localtime"])),
            "disks": disks,
            "nics": nics,
            "serial_console": draw(st.booleans()),
            "graphics": draw(st.sampled_from(["none", "vnc", "spice"])),
            "rng": draw(st.booleans()),
            "guest_agent": draw(st.booleans()),
            "tags": draw(st.lists(names, max_size=4, unique=True)),
            "placement": {
                "node_limit": draw(st.lists(names, max_size=3, unique=True)),
                "selector": draw(st.none() | st.sampled_from(["mem", "memprov", "vcpus", "load", "vms"])),
                "autostart": draw(st.booleans()),
            },
            "migration": {
                "method": draw(st.none() | st.sampled_from(["live", "live-only", "shutdown"])),
                "max_downtime_ms": draw(st.none() | st.integers(1, vmdef.MAX_DOWNTIME_MS)),
                "timeout_s": draw(st.none() | st.integers(1, vmdef.MAX_MIGRATION_TIMEOUT_S)),
            },
        }
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(definition=definitions(), host=st.sampled_from([KVM, TCG]))
def test_every_definition_round_trips(definition, host):
    xml = render(definition, host)
    assert import_xml(xml) == definition
    assert render(import_xml(xml), host) == xml


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    definition=definitions(),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["drop", "attr", "text", "child"]),
            st.integers(0, 10_000),
            st.sampled_from(["type", "name", "dev", "bus", "model", "unit", "x", "{urn:e}y"]),
            st.text(max_size=12),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_any_mangled_xml_is_imported_or_refused_never_a_traceback(definition, edits):
    root = ET.fromstring(render(definition, KVM))
    for op, index, name, value in edits:
        elements = list(root.iter())
        el = elements[index % len(elements)]
        if op == "drop" and el is not root:
            parent = next(p for p in root.iter() if el in list(p))
            parent.remove(el)
        elif op == "attr":
            el.set(name, value)
        elif op == "text":
            el.text = value
        elif op == "child":
            ET.SubElement(el, name.strip("{}:") or "x")
    try:
        result = import_xml(ET.tostring(root, encoding="unicode"))
    except VmXmlError as exc:
        assert exc.problems and all(p and m for p, m in exc.problems)
    else:
        assert isinstance(result, VmDefinition)


def test_an_explicit_qemu64_is_kept_under_kvm_and_tcg():
    explicit = FULL.changed(cpu_model="qemu64")
    assert import_xml(render(explicit, KVM)).cpu_model == "qemu64"
    assert import_xml(render(explicit, TCG)).cpu_model == "qemu64"


def test_libvirt_style_input_maps_onto_the_model():
    """What libvirt itself writes (KiB, versioned machine types, addresses, aliases, controllers) imports."""
    xml = (
        "<domain type='kvm' id='3'><name>imported</name><uuid>C0FFEE00-0000-4000-8000-00000000000B</uuid>"
        "<memory unit='KiB'>1048576</memory><currentMemory unit='KiB'>1048576</currentMemory>"
        "<vcpu placement='static'>2</vcpu><resource><partition>/machine</partition></resource>"
        "<os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type>"
        "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>"
        "<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/imported_VARS.fd</nvram>"
        "<boot dev='hd'/></os><features><acpi/><apic/><vmport state='off'/></features>"
        "<cpu mode='host-passthrough' check='none' migratable='on'><topology sockets='1' dies='1' cores='2' "
        "threads='1'/></cpu><clock offset='utc'><timer name='rtc' tickpolicy='catchup'/></clock>"
        "<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>"
        "<pm><suspend-to-mem enabled='no'/><suspend-to-disk enabled='no'/></pm><devices>"
        "<emulator>/usr/bin/qemu-system-x86_64</emulator>"
        "<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none' discard='unmap'/>"
        "<auth username='libvirt'><secret type='ceph' uuid='x'/></auth>"
        "<source protocol='rbd' name='vms/imported'><host name='10.0.0.1' port='6789'/></source>"
        "<backingStore/><target dev='vda' bus='virtio'/><alias name='virtio-disk0'/>"
        "<address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/></disk>"
        "<controller type='usb' index='0' model='qemu-xhci'><address type='pci'/></controller>"
        "<controller type='pci' index='0' model='pcie-root'/>"
        "<interface type='bridge'><mac address='52:54:00:aa:bb:cc'/><source bridge='vmbr42'/>"
        "<target dev='vnet3'/><model type='virtio'/><alias name='net0'/><address type='pci'/></interface>"
        "<serial type='pty'><source path='/dev/pts/3'/><log file='/var/log/x.log' append='on'/>"
        "<target type='isa-serial' port='0'><model name='isa-serial'/></target><alias name='serial0'/></serial>"
        "<console type='pty'><source path='/dev/pts/3'/><target type='serial' port='0'/></console>"
        "<channel type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-3-imported/"
        "org.qemu.guest_agent.0'/><target type='virtio' name='org.qemu.guest_agent.0' state='connected'/></channel>"
        "<input type='mouse' bus='ps2'/><input type='keyboard' bus='ps2'/>"
        "<graphics type='vnc' port='5900' autoport='yes' listen='127.0.0.1'><listen type='address' "
        "address='127.0.0.1'/></graphics><audio id='1' type='none'/><video><model type='vga' vram='16384' heads='1' "
        "primary='yes'/><alias name='video0'/></video><memballoon model='virtio'><alias name='balloon0'/>"
        "</memballoon><rng model='virtio'><backend model='random'>/dev/urandom</backend></rng></devices></domain>"
    )
    d = import_xml(xml)
    assert (d.name, d.uuid, d.memory_mib, d.vcpus, d.machine, d.firmware) == (
        "imported",
        "c0ffee00-0000-4000-8000-00000000000b",
        1024,
        2,
        "q35",
        "uefi",
    )
    assert d.topology == vmdef.Topology(sockets=1, cores=2, threads=1) and d.cpu_model is None
    assert d.disks == [vmdef.Disk(volume="vms/imported")]
    assert d.nics == [vmdef.Nic(network=42, mac="52:54:00:aa:bb:cc")]
    assert (d.serial_console, d.guest_agent, d.graphics, d.rng) == (True, True, "vnc", True)
    # what the user gave for the node's facts is replaced, never used
    out = render(d, KVM)
    assert "10.0.0.1" not in out and "/var/log/x.log" not in out and "/dev/pts" not in out
    assert '<host name="192.0.2.11" port="6789" />' in out


def test_what_libvirt_leaves_out_means_what_libvirt_does():
    d = import_xml("<domain type='kvm'><name>v</name><memory>262144</memory><devices/></domain>")
    assert (d.vcpus, d.memory_mib, d.machine, d.firmware, d.boot, d.clock) == (1, 256, "pc", "bios", ["hd"], "utc")
    assert (d.serial_console, d.graphics, d.rng, d.guest_agent, d.disks, d.nics) == (
        False,
        "none",
        False,
        False,
        [],
        [],
    )


# -- the allowlist: every hostile class of the review's C1, refused with its path ----------------------------------
HOSTILE = {
    "host file disk": (
        minimal(RBD + "<disk type='file' device='disk'><source file='/etc/shadow'/><target dev='vdb'/></disk>"),
        "devices/disk[2]/source/@file",
        "host file disks are not allowed; use an RBD volume",
    ),
    "host block device": (
        minimal("<disk type='block'><source dev='/dev/disk/by-label/PVCCONFIG'/><target dev='vda'/></disk>"),
        "devices/disk/source/@dev",
        "host block devices are not allowed",
    ),
    "host directory disk": (
        minimal("<disk type='dir'><source dir='/'/><target dev='vda'/></disk>"),
        "devices/disk/source/@dir",
        "host directories are not allowed",
    ),
    "storage-pool volume": (
        minimal("<disk type='volume'><source pool='default' volume='x'/><target dev='vda'/></disk>"),
        "devices/disk/source/@volume",
        "storage-pool volumes are not allowed",
    ),
    "disk without a type (a file)": (
        minimal("<disk><source file='/etc/shadow'/><target dev='vda'/></disk>"),
        "devices/disk/source/@file",
        "host file disks",
    ),
    "nvme disk": (
        minimal("<disk type='nvme'><source type='pci'/><target dev='vda'/></disk>"),
        "devices/disk/@type",
        "host NVMe devices",
    ),
    "http network disk (SSRF)": (
        minimal(
            "<disk type='network'><source protocol='http' name='/latest'><host name='169.254.169.254'/></source>"
            "<target dev='vda'/></disk>"
        ),
        "devices/disk/source/@protocol",
        "network disks other than Ceph RBD ('http') are not allowed",
    ),
    "nbd network disk": (
        minimal("<disk type='network'><source protocol='nbd'><host name='10.0.0.1'/></source></disk>"),
        "devices/disk/source/@protocol",
        "('nbd')",
    ),
    "iscsi network disk": (
        minimal("<disk type='network'><source protocol='iscsi' name='iqn.x/1'/></disk>"),
        "devices/disk/source/@protocol",
        "('iscsi')",
    ),
    "rbd with a host ceph.conf": (
        minimal(
            "<disk type='network'><source protocol='rbd' name='vms/x'><config file='/etc/ceph/ceph.conf'/>"
            "</source></disk>"
        ),
        "devices/disk/source/config",
        "Ceph configuration file from the host",
    ),
    "shared disk": (
        minimal(
            "<disk type='network'><source protocol='rbd' name='vms/x'/><target dev='vda' bus='virtio'/>"
            "<shareable/></disk>"
        ),
        "devices/disk/shareable",
        "shared by two VMs",
    ),
    "hostdev": (
        minimal("<hostdev mode='subsystem' type='pci' managed='yes'><source><address bus='0x01'/></source></hostdev>"),
        "devices/hostdev",
        "host device passthrough",
    ),
    "filesystem passthrough": (
        minimal("<filesystem type='mount' accessmode='passthrough'><source dir='/'/><target dir='r'/></filesystem>"),
        "devices/filesystem",
        "host filesystem passthrough is not allowed",
    ),
    "qemu:commandline": (
        f"<domain type='kvm' xmlns:qemu='{QEMU_NS}'><name>v</name><memory>262144</memory>"
        "<qemu:commandline><qemu:arg value='-chardev'/></qemu:commandline></domain>",
        "qemu:commandline",
        "raw QEMU arguments",
    ),
    "qemu:commandline under another prefix": (
        f"<domain type='kvm' xmlns:q='{QEMU_NS}'><name>v</name><memory>262144</memory>"
        "<q:commandline><q:arg value='-x'/></q:commandline></domain>",
        "qemu:commandline",
        "raw QEMU arguments",
    ),
    "qemu:commandline as a default namespace": (
        f"<domain type='kvm'><name>v</name><memory>262144</memory><devices/><commandline xmlns='{QEMU_NS}'>"
        "<arg value='-x'/></commandline></domain>",
        "qemu:commandline",
        "raw QEMU arguments",
    ),
    "qemu:override": (
        f"<domain type='kvm' xmlns:qemu='{QEMU_NS}'><name>v</name><memory>262144</memory>"
        "<qemu:override><qemu:device alias='x'/></qemu:override></domain>",
        "qemu:override",
        "raw QEMU arguments",
    ),
    "emulator": (minimal("<emulator>/bin/sh</emulator>"), "devices/emulator", "PVC sets the emulator"),
    "seclabel none": (minimal(top="<seclabel type='none'/>"), "seclabel", "security labels are set by PVC"),
    "seclabel root dac": (
        minimal(top="<seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>"),
        "seclabel",
        "security labels are set by PVC",
    ),
    "seclabel on a disk source": (
        minimal(
            "<disk type='network'><source protocol='rbd' name='vms/x'><seclabel model='dac' relabel='no'/>"
            "</source></disk>"
        ),
        "devices/disk/source/seclabel",
        "security labels are set by PVC",
    ),
    "serial to a host file": (
        minimal("<serial type='file'><source path='/etc/evil'/><target port='0'/></serial>"),
        "devices/serial/@type",
        "a serial to 'file' is not allowed",
    ),
    "serial to tcp": (
        minimal("<serial type='tcp'><source mode='bind' host='0.0.0.0' service='4444'/></serial>"),
        "devices/serial/@type",
        "a serial to 'tcp' is not allowed",
    ),
    "serial to udp": (minimal("<serial type='udp'/>"), "devices/serial/@type", "'udp'"),
    "serial to a unix socket": (minimal("<serial type='unix'/>"), "devices/serial/@type", "'unix'"),
    "serial to a host device": (minimal("<serial type='dev'/>"), "devices/serial/@type", "'dev'"),
    "console to a file": (minimal("<console type='file'/>"), "devices/console/@type", "a console to 'file'"),
    "a second serial port": (
        minimal("<serial type='pty'/><serial type='pty'/>"),
        "devices/serial[2]",
        "one serial console",
    ),
    "channel to a file": (minimal("<channel type='file'/>"), "devices/channel/@type", "a channel to 'file'"),
    "channel to tcp": (minimal("<channel type='tcp'/>"), "devices/channel/@type", "a channel to 'tcp'"),
    "agent channel at a host path": (
        minimal(
            "<channel type='unix'><source mode='bind' path='/root/.ssh/authorized_keys'/>"
            "<target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
        ),
        "devices/channel/source/@path",
        "placed by libvirt",
    ),
    "agent channel path escaping libvirt's folder": (
        minimal(
            "<channel type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/channel/../../../../etc/x'/>"
            "<target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
        ),
        "devices/channel/source/@path",
        "placed by libvirt",
    ),
    "other unix channel": (
        minimal("<channel type='unix'><target type='virtio' name='com.evil.0'/></channel>"),
        "devices/channel",
        "the only channel PVC supports",
    ),
    "macvtap on a host interface": (
        minimal("<interface type='direct'><source dev='eth1' mode='bridge'/></interface>"),
        "devices/interface/@type",
        "macvtap on a host interface is not allowed",
    ),
    "libvirt network": (
        minimal("<interface type='network'><source network='default'/></interface>"),
        "devices/interface/@type",
        "libvirt networks are not used",
    ),
    "ethernet with a script": (
        minimal("<interface type='ethernet'><script path='/tmp/x.sh'/></interface>"),
        "devices/interface/@type",
        "host scripts",
    ),
    "user networking": (minimal("<interface type='user'/>"), "devices/interface/@type", "user-mode"),
    "vhost-user interface": (minimal("<interface type='vhostuser'/>"), "devices/interface/@type", "vhost-user"),
    "a host bridge": (
        minimal("<interface type='bridge'><source bridge='br0'/></interface>"),
        "devices/interface/source/@bridge",
        "'br0' is not a PVC network bridge",
    ),
    "bridge vmbr0": (
        minimal("<interface type='bridge'><source bridge='vmbr0'/></interface>"),
        "devices/interface/source/@bridge",
        "is not a PVC network bridge",
    ),
    "bridge vmbr1x": (
        minimal("<interface type='bridge'><source bridge='vmbr1x'/></interface>"),
        "devices/interface/source/@bridge",
        "is not a PVC network bridge",
    ),
    "a script on a bridge": (
        minimal("<interface type='bridge'><source bridge='vmbr1'/><script path='/tmp/x.sh'/></interface>"),
        "devices/interface/script",
        "host scripts are not allowed",
    ),
    "an option ROM file": (
        minimal("<interface type='bridge'><source bridge='vmbr1'/><rom file='/etc/shadow'/></interface>"),
        "devices/interface/rom",
        "option ROM files",
    ),
    "os kernel": (minimal(os="<kernel>/boot/vmlinuz</kernel>"), "os/kernel", "booting a kernel"),
    "os initrd": (minimal(os="<initrd>/boot/initrd.img</initrd>"), "os/initrd", "booting a kernel"),
    "os cmdline": (minimal(os="<cmdline>init=/bin/sh</cmdline>"), "os/cmdline", "booting a kernel"),
    "os dtb": (minimal(os="<dtb>/x.dtb</dtb>"), "os/dtb", "booting a kernel"),
    "os loader path": (minimal(os="<loader>/etc/shadow</loader>"), "os/loader", "firmware files are chosen by PVC"),
    "os nvram path": (
        minimal(os="<loader>/usr/share/OVMF/OVMF_CODE.fd</loader><nvram>/etc/passwd</nvram>"),
        "os/nvram",
        "UEFI variables are kept by libvirt",
    ),
    "os nvram template": (
        minimal(os="<loader>/usr/share/OVMF/OVMF_CODE.fd</loader><nvram template='/etc/shadow'/>"),
        "os/nvram/@template",
        "templates are chosen by PVC",
    ),
    "os acpi table": (
        minimal(os="<acpi><table type='slic'>/etc/shadow</table></acpi>"),
        "os/acpi",
        "ACPI tables from host files",
    ),
    "os smbios from the host": (minimal(os="<smbios mode='host'/>"), "os/smbios", "PVC cannot express"),
    "graphics listening everywhere": (
        minimal("<graphics type='vnc' port='-1' autoport='yes' listen='0.0.0.0'/>"),
        "devices/graphics/@listen",
        "'0.0.0.0': graphics listen on 127.0.0.1 only",
    ),
    "graphics listen element elsewhere": (
        minimal("<graphics type='spice' autoport='yes'><listen type='address' address='192.0.2.1'/></graphics>"),
        "devices/graphics/listen/@address",
        "graphics listen on 127.0.0.1 only",
    ),
    "graphics on a libvirt network": (
        minimal("<graphics type='vnc' autoport='yes'><listen type='network' network='default'/></graphics>"),
        "devices/graphics/listen/@type",
        "graphics listen on the address 127.0.0.1 only",
    ),
    "graphics on a host socket": (
        minimal("<graphics type='vnc' socket='/run/evil.sock'/>"),
        "devices/graphics/@socket",
        "PVC cannot express the attribute 'socket'",
    ),
    "graphics rendernode": (
        minimal("<graphics type='spice' autoport='yes'><gl enable='yes' rendernode='/dev/dri/x'/></graphics>"),
        "devices/graphics/gl",
        "PVC cannot express",
    ),
    "redirdev": (minimal("<redirdev bus='usb' type='tcp'/>"), "devices/redirdev", "USB redirection"),
    "smartcard": (minimal("<smartcard mode='passthrough' type='tcp'/>"), "devices/smartcard", "smartcards"),
    "shmem": (minimal("<shmem name='x'><server path='/tmp/s'/></shmem>"), "devices/shmem", "shared memory"),
    "tpm passthrough": (
        minimal("<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend></tpm>"),
        "devices/tpm",
        "host passthrough is not allowed",
    ),
    "memoryBacking from a file": (
        minimal(top="<memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>"),
        "memoryBacking",
        "memory backing (host files",
    ),
    "foreign namespace element": (
        minimal(top="<x:evil xmlns:x='urn:evil'/>"),
        "{urn:evil}evil",
        "elements from other XML namespaces (urn:evil) are not allowed",
    ),
    "foreign namespace attribute": (
        minimal("<disk xmlns:x='urn:evil' x:path='/etc' type='network'><source protocol='rbd' name='v/x'/></disk>"),
        "devices/disk/@{urn:evil}path",
        "attributes from other XML namespaces",
    ),
    "PVC's namespace outside metadata": (
        minimal(top=f"<pvc:tag xmlns:pvc='{PVC_NS}'>x</pvc:tag>"),
        "pvc:tag",
        "elements from other XML namespaces",
    ),
    "foreign attribute in PVC's metadata": (
        minimal(
            top=f"<metadata><pvc:vm xmlns:pvc='{PVC_NS}' xmlns:x='urn:evil'><pvc:placement x:run='sh'/></pvc:vm>"
            "</metadata>"
        ),
        "metadata/pvc:vm/pvc:placement/@{urn:evil}run",
        "attributes from other XML namespaces",
    ),
    "PVC's metadata twice": (
        minimal(top=f"<metadata><pvc:vm xmlns:pvc='{PVC_NS}'/><pvc:vm xmlns:pvc='{PVC_NS}'/></metadata>"),
        "metadata/pvc:vm[2]",
        "given more than once",
    ),
    "foreign metadata": (
        minimal(top="<metadata><libosinfo:os xmlns:libosinfo='http://libosinfo.org/x' id='x'/></metadata>"),
        "metadata/{http://libosinfo.org/x}os",
        "only PVC's own metadata",
    ),
    "input from a host device": (
        minimal("<input type='evdev'><source dev='/dev/input/event0'/></input>"),
        "devices/input/@type",
        "no host devices",
    ),
    "input passthrough": (
        minimal("<input type='passthrough' bus='virtio'><source evdev='/dev/input/event0'/></input>"),
        "devices/input/@type",
        "no host devices",
    ),
    "audio to a host file": (
        minimal("<audio id='1' type='file' path='/tmp/x.wav'/>"),
        "devices/audio/@type",
        "audio back-ends on the host",
    ),
    "rng from tcp": (
        minimal("<rng model='virtio'><backend model='egd' type='tcp'><source host='1.2.3.4'/></backend></rng>"),
        "devices/rng/backend/@model",
        "from a host socket or TCP",
    ),
    "rng from a host device": (
        minimal("<rng model='virtio'><backend model='random'>/dev/sda</backend></rng>"),
        "devices/rng/backend",
        "the RNG reads /dev/urandom",
    ),
    "vhost-user gpu": (
        minimal("<video><driver name='vhostuser'/><model type='virtio'/></video>"),
        "devices/video/driver",
        "PVC cannot express",
    ),
    "lease on a host file": (
        minimal("<lease><lockspace>x</lockspace><target path='/etc/x'/></lease>"),
        "devices/lease",
        "lock leases",
    ),
    "watchdog dumping core": (minimal("<watchdog model='i6300esb' action='dump'/>"), "devices/watchdog", "watchdog"),
    "parallel to a file": (minimal("<parallel type='file'/>"), "devices/parallel", "parallel ports"),
    "crash dump to the host": (minimal(top="<on_crash>coredump-destroy</on_crash>"), "on_crash", "PVC sets"),
    "sysinfo from the host": (minimal(top="<sysinfo type='fwcfg'/>"), "sysinfo", "fw_cfg"),
    "cpu pinning": (minimal(top="<cputune><vcpupin vcpu='0' cpuset='1'/></cputune>"), "cputune", "node-specific"),
    "vcpu cpuset": (
        "<domain type='kvm'><name>v</name><memory>262144</memory><vcpu cpuset='0-1'>2</vcpu></domain>",
        "vcpu/@cpuset",
        "PVC cannot express",
    ),
    "cpu feature": (
        minimal(top="<cpu mode='custom'><model>qemu64</model><feature policy='require' name='vmx'/></cpu>"),
        "cpu/feature",
        "CPU feature flags",
    ),
    "cpu model as a minimum": (
        minimal(top="<cpu match='minimum'><model>qemu64</model></cpu>"),
        "cpu/@match",
        "PVC asks for the model exactly",
    ),
    "cpu host-model": (minimal(top="<cpu mode='host-model'/>"), "cpu/@mode", "'host-model'"),
    "an unknown element": (minimal(top="<frobnicate/>"), "frobnicate", "PVC cannot express <frobnicate>"),
    "an unknown device": (minimal("<frobnicate/>"), "devices/frobnicate", "PVC cannot express the device"),
    "an unknown attribute": (
        "<domain type='kvm'><name>v</name><memory dumpCore='on'>262144</memory></domain>",
        "memory/@dumpCore",
        "PVC cannot express the attribute 'dumpCore'",
    ),
    "a xen domain": (
        "<domain type='xen'><name>v</name><memory>262144</memory></domain>",
        "@type",
        "PVC runs VMs with KVM or QEMU",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_xml_is_refused_naming_the_path(case):
    xml, path, message = HOSTILE[case]
    with pytest.raises(VmXmlError) as info:
        import_xml(xml)
    problems = info.value.problems
    assert any(p == path and message in m for p, m in problems), problems
    assert f"{path}: " in str(info.value)


def test_every_problem_is_reported_at_once():
    """The review's probe: eight attacks in one domain, each named."""
    xml = (
        f"<domain type='kvm' xmlns:qemu='{QEMU_NS}'><name>evil</name><memory>262144</memory>"
        "<seclabel type='static' model='dac'><label>+0:+0</label></seclabel><devices>"
        "<emulator>/bin/sh</emulator><disk type='file'><source file='/run/pvc/cluster.toml'/></disk>"
        "<disk type='block'><source dev='/dev/disk/by-label/PVCCONFIG'/></disk>"
        "<filesystem type='mount' accessmode='passthrough'><source dir='/'/><target dir='r'/></filesystem>"
        "<hostdev mode='subsystem' type='pci'/><serial type='file'><source path='/etc/evil'/></serial></devices>"
        "<qemu:commandline><qemu:arg value='-x'/></qemu:commandline></domain>"
    )
    with pytest.raises(VmXmlError) as info:
        import_xml(xml)
    assert sorted(p for p, _ in info.value.problems) == sorted(
        [
            "seclabel",
            "qemu:commandline",
            "devices/emulator",
            "devices/disk[1]/source/@file",
            "devices/disk[2]/source/@dev",
            "devices/filesystem",
            "devices/hostdev",
            "devices/serial/@type",
        ]
    )


def test_what_pvc_sets_itself_is_replaced_not_used():
    """RBD monitors and auth, and the console log, given by a user are dropped: the node's own go in."""
    xml = minimal(
        "<disk type='network'><auth username='admin'><secret type='ceph' usage='client.admin secret'/></auth>"
        "<source protocol='rbd' name='vms/x'><host name='203.0.113.9' port='1'/></source>"
        "<target dev='vda' bus='virtio'/></disk><serial type='pty'><log file='/etc/cron.d/evil'/></serial>"
    )
    out = render(import_xml(xml), KVM)
    assert "203.0.113.9" not in out and "admin" not in out and "/etc/cron.d" not in out
    root = ET.fromstring(out)
    assert root.find("devices/disk/auth").get("username") == "libvirt"
    assert root.find("devices/serial/log").get("file") == KVM.console_log


@pytest.mark.parametrize(
    ("xml", "path", "message"),
    [
        (minimal().replace("<name>v</name>", "<name>a:b</name>"), "name", "contains ':'"),
        (minimal().replace("<name>v</name>", "<name>-rf</name>"), "name", "starts with '-'"),
        (minimal().replace("<name>v</name>", ""), "name", "the domain has no <name>"),
        (minimal().replace("<memory unit='MiB'>256</memory>", ""), "memory", "the domain has no <memory>"),
        (minimal().replace("256", "8"), "memory", "8 MiB: the memory is 16-4194304 MiB"),
        (minimal().replace("unit='MiB'>256", "unit='KiB'>1000"), "memory", "not a whole number of MiB"),
        (minimal().replace("unit='MiB'>256", "unit='parsecs'>1"), "memory/@unit", "not a unit"),
        (minimal().replace("256", "lots"), "memory", "'lots' is not a whole number"),
        (minimal(top="<vcpu>300</vcpu>"), "vcpu", "300: Input should be less than or equal to 255"),
        (
            minimal(top="<vcpu>2</vcpu><cpu><topology sockets='3' cores='1' threads='1'/></cpu>"),
            "cpu/topology",
            "= 3, but vcpus is 2",
        ),
        (minimal(os="<boot dev='fd'/>"), "os/boot/@dev", "'fd'"),
        (minimal(top="<uuid>nope</uuid>"), "uuid", "'nope' is not a UUID"),
        (minimal().replace("machine='pc'", "machine='virt'"), "os/type/@machine", "'virt'"),
        (minimal().replace("x86_64", "aarch64"), "os/type/@arch", "x86_64"),
        (
            minimal("<interface type='bridge'><mac address='01:00:5e:00:00:01'/><source bridge='vmbr1'/></interface>"),
            "devices/interface/mac/@address",
            "multicast",
        ),
        (
            minimal("<interface type='bridge'><source bridge='vmbr1'/><model type='vmxnet3'/></interface>"),
            "devices/interface/model/@type",
            "'vmxnet3'",
        ),
        (
            minimal("<disk type='network'><source protocol='rbd' name='vms/x'/><target dev='hda' bus='ide'/></disk>"),
            "devices/disk/target/@bus",
            "'ide'",
        ),
        (
            minimal("<disk type='network'><source protocol='rbd' name='x:y'/></disk>"),
            "devices/disk/source/@name",
            "is not an RBD volume",
        ),
        (
            minimal(
                "<disk type='network'><driver name='qemu' type='qcow2'/><source protocol='rbd' name='v/x'/></disk>"
            ),
            "devices/disk/driver/@type",
            "RBD volumes are raw",
        ),
        (
            minimal(
                "<disk type='network'><source protocol='rbd' name='v/x'/></disk>"
                "<disk type='network'><source protocol='rbd' name='v/x'/></disk>"
            ),
            "devices",
            "volume 'v/x' is given twice",
        ),
        (minimal(top="<name>w</name>"), "name[2]", "given more than once"),
        (minimal(top="<currentMemory unit='MiB'>128</currentMemory>"), "currentMemory", "ballooned"),
        (
            minimal(top=f"<metadata><pvc:vm xmlns:pvc='{PVC_NS}'><pvc:tag>a b</pvc:tag></pvc:vm></metadata>"),
            "metadata/pvc:vm/pvc:tag",
            "contains ' '",
        ),
        (
            minimal(
                top=f"<metadata><pvc:vm xmlns:pvc='{PVC_NS}'><pvc:disk volume='v/x' size='1'/></pvc:vm></metadata>"
            ),
            "metadata/pvc:vm/pvc:disk/@volume",
            "no disk of this VM is on volume 'v/x'",
        ),
        (
            minimal(top=f"<metadata><pvc:vm xmlns:pvc='{PVC_NS}'><pvc:migration method='fast'/></pvc:vm></metadata>"),
            "metadata/pvc:vm/pvc:migration/@method",
            "'fast'",
        ),
        (
            minimal(top=f"<metadata><pvc:vm xmlns:pvc='{PVC_NS}'><pvc:script>x</pvc:script></pvc:vm></metadata>"),
            "metadata/pvc:vm/pvc:script",
            "PVC's metadata has no <pvc:script>",
        ),
    ],
)
def test_values_the_model_refuses_name_their_xml_path(xml, path, message):
    with pytest.raises(VmXmlError) as info:
        import_xml(xml)
    assert any(p == path and message in m for p, m in info.value.problems), info.value.problems


# -- parsing: only a plain, well-formed document ---------------------------------------------------------------
BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
    + "]><domain><name>&lol9;</name></domain>"
)


@pytest.mark.parametrize(
    ("xml", "path", "message"),
    [
        (BILLION_LAUGHS, "(document)", "<!DOCTYPE> is not allowed"),
        (
            '<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/shadow">]><domain><name>&x;</name></domain>',
            "(document)",
            "<!DOCTYPE> is not allowed",
        ),
        (
            '<!DOCTYPE d [<!ENTITY % p SYSTEM "http://192.0.2.1/x.dtd"> %p;]><domain/>',
            "(document)",
            "<!DOCTYPE> is not allowed",
        ),
        ('<!DOCTYPE domain SYSTEM "/etc/shadow"><domain/>', "(document)", "<!DOCTYPE> is not allowed"),
        ("<domain><name>&x;</name></domain>", "line 1, column 15", "undefined entity"),
        ("<domain><name>x</name>", "line 1, column 23", "no element found"),
        ("", "line 1, column 1", "no element found"),
        ("<domain><name>x</nam></domain>", "line 1, column 18", "mismatched tag"),
        ("not xml", "line 1, column 1", "syntax error"),
        ("<network><name>x</name></network>", "network", "a domain XML has <domain>"),
        ("<domain>" + "<a>" * 5000 + "</a>" * 5000 + "</domain>", "(document)", "nested deeper than 32"),
        ("<domain>" + " " * MAX_XML + "</domain>", "(document)", f"at most {MAX_XML}"),
    ],
)
def test_only_a_plain_well_formed_domain_is_parsed(xml, path, message):
    with pytest.raises(VmXmlError) as info:
        import_xml(xml)
    assert [(p, m) for p, m in info.value.problems if p == path and message in m], info.value.problems


def test_an_encoding_declaration_and_comments_are_fine():
    xml = "<?xml version='1.0' encoding='UTF-8'?><!-- made by hand --><domain type='kvm'><name>v</name>"
    xml += "<memory unit='GiB'>1</memory><?pi ignored?></domain>"
    assert import_xml(xml).memory_mib == 1024


# -- libvirt's own schema accepts what is rendered -------------------------------------------------------------
REPRESENTATIVE = {
    "bios-pc-minimal": VmDefinition(name="a", memory_mib=64, machine="pc"),
    "bios-q35-no-devices": VmDefinition(
        name="b", memory_mib=64, serial_console=False, rng=False, guest_agent=False, machine="q35"
    ),
    "uefi-q35-full": FULL,
    "uefi-pc-spice": FULL.changed(machine="pc", graphics="spice", cpu_model="EPYC", clock="localtime"),
    "cdrom-boot-scsi": VmDefinition.model_validate(
        {
            "name": "c",
            "memory_mib": 512,
            "boot": ["cdrom", "network", "hd"],
            "disks": [
                {"volume": "iso/installer", "device": "cdrom", "bus": "scsi"},
                {"volume": "vms/c", "bus": "scsi"},
            ],
            "nics": [{"network": 1, "model": "rtl8139"}, {"network": 2, "model": "e1000e"}, {"network": 3}],
        }
    ),
    "many-disks-and-nics": VmDefinition.model_validate(
        {
            "name": "d",
            "memory_mib": 1024,
            "vcpus": 8,
            "topology": {"sockets": 2, "cores": 2, "threads": 2},
            "disks": [
                {"volume": f"vms/d{i}", "bus": ["virtio", "scsi", "sata"][i % 3]} for i in range(vmdef.MAX_DISKS)
            ],
            "nics": [{"network": i + 1, "mac": f"52:54:00:00:00:{i:02x}"} for i in range(vmdef.MAX_NICS)],
            "graphics": "vnc",
        }
    ),
}


@pytest.mark.parametrize("host", [KVM, TCG], ids=["kvm", "tcg"])
@pytest.mark.parametrize("case", sorted(REPRESENTATIVE))
def test_rendered_xml_is_valid_for_libvirts_schema(case, host, tmp_path: Path):
    path = tmp_path / f"{case}.xml"
    path.write_text(render(REPRESENTATIVE[case], host))
    result = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_does_catch_invalid_xml(tmp_path: Path):
    """The schema check can fail: a domain without <memory> is refused by it."""
    path = tmp_path / "bad.xml"
    path.write_text(
        render(REPRESENTATIVE["bios-pc-minimal"], KVM).replace("<memory", "<mem0ry").replace("</memory", "</mem0ry")
    )
    assert subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True).returncode != 0
