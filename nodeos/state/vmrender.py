"""libvirt domain XML from a VM definition: `render`, the only way PVC makes domain XML.

A pure function of the definition and of what one node knows (`Host`). Whatever a user must not choose, PVC always
sets: the emulator, no security-label override, a pty serial console logged to PVC's file, graphics on 127.0.0.1,
RBD monitors and the client.libvirt secret, bridges named `vmbr<VNI>`. The output is the same on every node of a
cluster, so it migrates. Its inverse for what a definition can express is `vmimport.import_xml`:
`import_xml(render(d, host)) == d`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from pvc.config.choices import Accelerator
from pvc.config.networks import bridge_name
from pvc.config.secrets import LIBVIRT_CEPH_USER as CEPH_USER
from pvc.nodeos.state.vmdef import Disk, Nic, VmDefinition

PVC_NS = "urn:x-pvc:vm:1"  # PVC's own <metadata>: tags, placement, migration, disk sizes
ET.register_namespace("pvc", PVC_NS)

EMULATOR = "/usr/bin/qemu-system-x86_64"
UEFI_CODE = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd")  # Debian's ovmf, no secure boot
UEFI_VARS = ("/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_VARS.fd")
TCG_CPU_MODEL = "qemu64"  # QEMU's default x86 model: what TCG runs when the definition names none
GUEST_AGENT = "org.qemu.guest_agent.0"
LOOPBACK = "127.0.0.1"
Q35_SPARE_PORTS = 4  # free PCIe root ports on a q35 VM, for hot-plugged NICs and disks


@dataclass(frozen=True)
class Host:
    """What only the node that starts the VM knows. Every node of a cluster gives the same values, except the
    accelerator on mixed hardware."""

    accelerator: Accelerator  # chosen at run time: KVM where usable, else TCG
    ceph_monitors: tuple[tuple[str, int], ...]  # rbddisk.mons_from_conf(ceph.conf)
    ceph_secret_uuid: str  # the client.libvirt secret (rbddisk.define_secret)
    console_log: str  # the file QEMU appends the serial console to
    emulator: str = EMULATOR
    uefi_code: str = UEFI_CODE[0]
    uefi_vars: str = UEFI_VARS[0]

    def __post_init__(self) -> None:
        if self.accelerator not in ("kvm", "tcg"):
            raise ValueError(f"accelerator {self.accelerator!r} is neither 'kvm' nor 'tcg'")
        if self.emulator != EMULATOR:
            raise ValueError(f"emulator {self.emulator!r} is not {EMULATOR}")
        if self.uefi_code not in UEFI_CODE or self.uefi_vars not in UEFI_VARS:
            raise ValueError(f"UEFI firmware must be one of {UEFI_CODE} with one of {UEFI_VARS}")
        if not self.console_log.startswith("/") or not self.console_log.isprintable():
            raise ValueError(f"console log {self.console_log!r} is not an absolute path")


# -- render ---------------------------------------------------------------------------------------------------
def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _target_names(d: VmDefinition) -> list[str]:
    """vda, vdb, … for virtio disks; sda, sdb, … for SCSI and SATA (they share the sd namespace)."""
    counters = {"vd": 0, "sd": 0}
    names = []
    for disk in d.disks:
        prefix = "vd" if disk.bus == "virtio" else "sd"
        names.append(target_name(prefix, counters[prefix]))
        counters[prefix] += 1
    return names


def _pcie_devices(d: VmDefinition) -> int:
    """How many PCIe root ports libvirt uses for this q35 VM's devices (the rest stay free for hot-plug)."""
    count = sum(1 for disk in d.disks if disk.bus == "virtio")
    count += any(disk.bus == "scsi" for disk in d.disks)  # the virtio-scsi controller
    count += len(d.nics) + any(n.model == "rtl8139" for n in d.nics)  # rtl8139 sits behind a PCIe-PCI bridge
    return count + d.rng + d.guest_agent + 1  # rng, virtio-serial, balloon


def _metadata(d: VmDefinition) -> ET.Element:
    meta = ET.Element("metadata")
    vm = _sub(meta, f"{{{PVC_NS}}}vm")
    if d.cpu_model is None:  # the <cpu> below is the node's choice (host-passthrough or TCG's default), not the VM's
        _sub(vm, f"{{{PVC_NS}}}cpu", model="auto")
    for tag in d.tags:
        _sub(vm, f"{{{PVC_NS}}}tag", tag)
    placement = _sub(vm, f"{{{PVC_NS}}}placement", autostart="yes" if d.placement.autostart else "no")
    if d.placement.selector is not None:
        placement.set("selector", d.placement.selector)
    for node in d.placement.node_limit:
        _sub(placement, f"{{{PVC_NS}}}node", node)
    migration = _sub(vm, f"{{{PVC_NS}}}migration")
    m = d.migration
    for attr, value in (("method", m.method), ("max-downtime-ms", m.max_downtime_ms), ("timeout-s", m.timeout_s)):
        if value is not None:
            migration.set(attr, str(value))
    for disk in d.disks:  # every disk, in order: libvirt sorts them by bus
        el = _sub(vm, f"{{{PVC_NS}}}disk", volume=disk.volume)
        if disk.size is not None:
            el.set("size", str(disk.size))
    return meta


def _os(d: VmDefinition, host: Host) -> ET.Element:
    os_ = ET.Element("os")
    _sub(os_, "type", "hvm", arch="x86_64", machine=d.machine)
    if d.firmware == "uefi":
        _sub(os_, "loader", host.uefi_code, readonly="yes", type="pflash")
        _sub(os_, "nvram", template=host.uefi_vars)  # libvirt makes the file from the template on first start
    for dev in d.boot:
        _sub(os_, "boot", dev=dev)
    if d.firmware == "bios" and d.serial_console:
        _sub(os_, "bios", useserial="yes")  # SeaBIOS's messages on the serial console too (sgabios): in its log
    return os_


def _cpu(d: VmDefinition, host: Host) -> ET.Element:
    if d.cpu_model is None and host.accelerator == "kvm":
        cpu = ET.Element("cpu", mode="host-passthrough", check="none", migratable="on")
    else:  # a named model; under TCG without one, QEMU's default (what libvirt writes for "no model" anyway)
        cpu = ET.Element("cpu", mode="custom", match="exact", check="none")
        _sub(cpu, "model", d.cpu_model or TCG_CPU_MODEL, fallback="forbid")
    if d.topology is not None:
        t = d.topology
        _sub(cpu, "topology", sockets=str(t.sockets), cores=str(t.cores), threads=str(t.threads))
    if d.cpu_model is None and host.accelerator == "kvm":
        # nested hypervisors (and some hosts) refuse the host's arch-capabilities MSR: hide it, as tests do
        _sub(cpu, "feature", policy="disable", name="arch-capabilities")
    return cpu


def _disk(parent: ET.Element, disk: Disk, target: str, host: Host) -> None:
    el = _sub(parent, "disk", type="network", device=disk.device)
    _sub(el, "driver", name="qemu", type="raw", cache=disk.cache, discard=disk.discard)
    auth = _sub(el, "auth", username=CEPH_USER)
    _sub(auth, "secret", type="ceph", uuid=host.ceph_secret_uuid)
    source = _sub(el, "source", protocol="rbd", name=disk.volume)
    for name, port in host.ceph_monitors:
        _sub(source, "host", name=name, port=str(port))
    _sub(el, "target", dev=target, bus=disk.bus or "virtio")  # never None once validated
    if disk.read_only:
        _sub(el, "readonly")


def disk_xml(disk: Disk, target: str, host: Host) -> str:
    """One disk's `<disk>` as `render` writes it into a domain, on the target device `target` (a free one of the
    running domain): what pvcd hot-plugs into a running VM."""
    parent = ET.Element("devices")
    _disk(parent, disk, target, host)
    el = parent[0]
    ET.indent(el, "  ")
    return ET.tostring(el, encoding="unicode") + "\n"


def target_name(prefix: str, index: int) -> str:
    """The `index`th (from 0) device name with `prefix`: vda … vdz, vdaa, … (libvirt's naming)."""
    n, suffix = index, ""
    while True:
        suffix = chr(ord("a") + n % 26) + suffix
        n = n // 26 - 1
        if n < 0:
            return prefix + suffix


def _interface(nic: Nic) -> ET.Element:
    el = ET.Element("interface", type="bridge")
    if nic.mac is not None:
        _sub(el, "mac", address=nic.mac)
    _sub(el, "source", bridge=bridge_name(nic.network))
    _sub(el, "model", type=nic.model)
    return el


def interface_xml(nic: Nic) -> str:
    """One NIC's `<interface>` as `render` writes it into a domain: what pvcd hot-plugs into a running VM."""
    el = _interface(nic)
    ET.indent(el, "  ")
    return ET.tostring(el, encoding="unicode") + "\n"


def _devices(d: VmDefinition, host: Host) -> ET.Element:
    devices = ET.Element("devices")
    _sub(devices, "emulator", host.emulator)
    for disk, target in zip(d.disks, _target_names(d), strict=True):
        _disk(devices, disk, target, host)
    if any(disk.bus == "scsi" for disk in d.disks):
        _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    _sub(devices, "controller", type="usb", model="none")
    if d.machine == "q35":
        _sub(devices, "controller", type="pci", index="0", model="pcie-root")
        for index in range(1, 1 + _pcie_devices(d) + Q35_SPARE_PORTS):
            _sub(devices, "controller", type="pci", index=str(index), model="pcie-root-port")
    for nic in d.nics:
        devices.append(_interface(nic))
    if d.serial_console:
        serial = _sub(devices, "serial", type="pty")
        _sub(serial, "target", port="0")
        _sub(serial, "log", file=host.console_log, append="on")  # append: pvcd may truncate it while QEMU writes
        console = _sub(devices, "console", type="pty")
        _sub(console, "target", type="serial", port="0")
    if d.guest_agent:
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "target", type="virtio", name=GUEST_AGENT)
    if d.graphics != "none":
        graphics = _sub(devices, "graphics", type=d.graphics, port="-1", autoport="yes", listen=LOOPBACK)
        _sub(graphics, "listen", type="address", address=LOOPBACK)
        video = _sub(devices, "video")
        _sub(video, "model", type="vga")
    if d.rng:
        rng = _sub(devices, "rng", model="virtio")
        _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="virtio")
    return devices


def render(d: VmDefinition, host: Host) -> str:
    """The libvirt domain XML that starts `d` on the node `host` describes (deterministic: same input, same text)."""
    dom = ET.Element("domain", type="kvm" if host.accelerator == "kvm" else "qemu")
    _sub(dom, "name", d.name)
    if d.uuid is not None:
        _sub(dom, "uuid", d.uuid)
    if d.description:
        _sub(dom, "description", d.description)
    dom.append(_metadata(d))
    _sub(dom, "memory", str(d.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(d.vcpus), placement="static")
    dom.append(_os(d, host))
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    dom.append(_cpu(d, host))
    clock = _sub(dom, "clock", offset=d.clock)
    _sub(clock, "timer", name="rtc", tickpolicy="catchup")
    _sub(clock, "timer", name="pit", tickpolicy="delay")
    _sub(clock, "timer", name="hpet", present="no")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    pm = _sub(dom, "pm")
    _sub(pm, "suspend-to-mem", enabled="no")
    _sub(pm, "suspend-to-disk", enabled="no")
    dom.append(_devices(d, host))
    ET.indent(dom, "  ")
    return ET.tostring(dom, encoding="unicode") + "\n"
