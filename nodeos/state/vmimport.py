"""A VM definition from a user's libvirt domain XML: `import_xml`, the allowlist behind `pvc vm define file.xml`.

Every element and attribute either maps onto the definition, is one PVC sets itself (then it is checked and
replaced, see docs/vms.md), or is refused. All problems are collected and raised together as one `VmXmlError`,
each naming its XML path, e.g. `devices/disk[2]/source/@file: host file disks are not allowed; use an RBD volume`.
What the definition can express round-trips: `import_xml(vmrender.render(d, host)) == d`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from typing import Any
from xml.parsers import expat

from pydantic import ValidationError

from pvc.config.networks import BRIDGE_PREFIX
from pvc.nodeos.state.vmdef import MAX_MEMORY_MIB, MIN_MEMORY_MIB, VmDefinition
from pvc.nodeos.state.vmrender import (
    EMULATOR,
    GUEST_AGENT,
    LOOPBACK,
    PVC_NS,
    TCG_CPU_MODEL,
    UEFI_CODE,
    UEFI_VARS,
)

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
NVRAM_DIR = "/var/lib/libvirt/qemu/nvram"  # libvirt keeps each UEFI VM's variables here, from the template
CHANNEL_DIR = "/var/lib/libvirt/qemu/channel/"  # where libvirt puts the guest agent's socket
MAX_XML = 1_000_000
MAX_DEPTH = 32  # a domain XML nests about 6 deep
_BRIDGE_RE = re.compile(rf"^{BRIDGE_PREFIX}([1-9][0-9]{{0,7}})$")
_INT_RE = re.compile(r"^\s*[0-9]{1,20}\s*$")
_UNITS = {
    "b": 1,
    "bytes": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}


class VmXmlError(ValueError):
    """A domain XML PVC will not import; `problems` lists (XML path, what is wrong and what to do)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("\n".join(f"{path}: {message}" for path, message in problems))


_USE_RBD = "use an RBD volume (<disk type='network'><source protocol='rbd' name='pool/volume'/>)"
_USE_BRIDGE = "attach the NIC to a PVC network: <interface type='bridge'><source bridge='vmbr<VNI>'/>"
_USE_PTY = "PVC gives a VM one serial console on a pty and keeps its log"
_HOST_TUNING = "host CPU, NUMA, memory and I/O tuning is node-specific and not supported; remove it"

_REFUSED_TOP = {
    "seclabel": "security labels are set by PVC; remove <seclabel>",
    "memoryBacking": "memory backing (host files, memfd, hugepages, shared memory) is not allowed; remove it",
    "maxMemory": "memory hot-plug is not supported; give the memory in <memory>",
    "sysinfo": "SMBIOS/fw_cfg data from the host is not allowed; remove it",
    "bootloader": "host boot loaders are not allowed; boot from a disk",
    "bootloader_args": "host boot loaders are not allowed; boot from a disk",
    "title": "PVC keeps no title; use <description>",
    "iothreads": _HOST_TUNING,
    "iothreadids": _HOST_TUNING,
    "cputune": _HOST_TUNING,
    "numatune": _HOST_TUNING,
    "memtune": _HOST_TUNING,
    "blkiotune": _HOST_TUNING,
    "vcpus": "per-vCPU settings are not supported; give the count in <vcpu>",
    "launchSecurity": "confidential-computing launch security is not supported",
    "keywrap": "key wrapping is not supported",
    "idmap": "ID maps are for containers, not VMs",
    "perf": "host perf events are not supported",
    "throttlegroups": _HOST_TUNING,
}
_REFUSED_DEVICES = {
    "hostdev": "host device passthrough (PCI, USB, SCSI, mediated) is not allowed",
    "filesystem": "host filesystem passthrough is not allowed; " + _USE_RBD,
    "redirdev": "USB redirection from the host is not allowed",
    "smartcard": "smartcards from the host are not allowed",
    "shmem": "shared memory with the host is not allowed",
    "tpm": "TPM devices are not supported (host passthrough is not allowed; emulated TPM state is not migrated)",
    "parallel": "parallel ports are not supported; " + _USE_PTY,
    "lease": "lock leases on host files are not allowed; PVC locks disks in Ceph",
    "sound": "sound devices are not supported",
    "watchdog": "watchdog devices are not supported",
    "nvram": "NVRAM devices are not supported",
    "vsock": "vsock devices are not supported",
    "iommu": "IOMMU devices are not supported",
    "memory": "memory hot-plug devices are not supported",
    "crypto": "crypto devices are not supported",
    "hub": "USB hubs are not supported",
    "panic": "panic devices are not supported",
    "pstore": "pstore devices (host files) are not allowed",
}
_DISK_TYPES = {
    "file": ("file", "host file disks are not allowed; " + _USE_RBD),
    "block": ("dev", "host block devices are not allowed; " + _USE_RBD),
    "dir": ("dir", "host directories are not allowed as disks; " + _USE_RBD),
    "volume": ("volume", "libvirt storage-pool volumes are not allowed; " + _USE_RBD),
    "nvme": ("", "host NVMe devices are not allowed; " + _USE_RBD),
    "vhostuser": ("path", "vhost-user disks (host sockets) are not allowed; " + _USE_RBD),
    "vhostvdpa": ("dev", "vDPA devices are not allowed; " + _USE_RBD),
}
_IFACE_TYPES = {
    "network": "libvirt networks are not used by PVC; " + _USE_BRIDGE,
    "direct": "macvtap on a host interface is not allowed (it puts the guest on the host's network); " + _USE_BRIDGE,
    "ethernet": "unmanaged tap devices and host scripts are not allowed; " + _USE_BRIDGE,
    "hostdev": "host network device passthrough is not allowed; " + _USE_BRIDGE,
    "user": "user-mode networking is not supported; " + _USE_BRIDGE,
    "vhostuser": "vhost-user interfaces (host sockets) are not allowed; " + _USE_BRIDGE,
}
_CONTROLLER_TYPES = {"pci", "usb", "scsi", "sata", "ide", "virtio-serial", "fdc", "isa"}
_INPUT_TYPES = {"mouse", "keyboard", "tablet"}
_INPUT_BUSES = {"ps2", "usb", "virtio"}
_VIDEO_MODELS = {"vga", "cirrus", "qxl", "virtio", "bochs", "ramfb", "none"}
_TIMERS = {"rtc", "pit", "hpet", "kvmclock", "hypervclock", "tsc"}
_LIFECYCLE = {"on_poweroff": "destroy", "on_reboot": "restart", "on_crash": "destroy"}
_FEATURES_PVC_SETS = {"acpi", "apic", "pae"}
_PRETTY_NS = {QEMU_NS: "qemu", PVC_NS: "pvc"}


def _qname(tag: str) -> str:
    if tag.startswith("{"):
        uri, _, local = tag[1:].partition("}")
        prefix = _PRETTY_NS.get(uri)
        return f"{prefix}:{local}" if prefix else f"{{{uri}}}{local}"
    return tag


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


def _at(path: str, attr: str) -> str:
    return f"{path}/@{attr}" if path else f"@{attr}"


def _children(el: ET.Element, path: str) -> list[tuple[ET.Element, str]]:
    """The children with their paths: `disk[2]` when several share a tag, `disk` when it is the only one."""
    counts = Counter(c.tag for c in el)
    seen: Counter[str] = Counter()
    out = []
    for child in el:
        seen[child.tag] += 1
        out.append((child, _join(path, _qname(child.tag) + (f"[{seen[child.tag]}]" if counts[child.tag] > 1 else ""))))
    return out


class _Importer:
    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []
        self.origin: dict[tuple[Any, ...], str] = {("name",): "name", ("memory_mib",): "memory"}
        self.data: dict[str, Any] = {}
        self.disks: list[tuple[dict[str, Any], dict[tuple[str, ...], str]]] = []  # with where each value came from
        self.disk_meta: dict[str, tuple[int | None, str]] = {}  # volume -> size, path: PVC's metadata, in order
        self.cpu_auto = False  # PVC's metadata says the <cpu> was the node's choice

    # -- helpers ------------------------------------------------------------------------------------------
    def refuse(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def put(self, loc: tuple[Any, ...], value: Any, path: str) -> None:
        target = self.data
        for key in loc[:-1]:
            target = target.setdefault(key, {})
        target[loc[-1]] = value
        self.origin[loc] = path

    def kids(self, el: ET.Element, path: str) -> list[tuple[ET.Element, str]]:
        """The children with their paths, except those `scan` refused already (other namespaces, seclabel)."""
        return [(c, p) for c, p in _children(el, path) if not c.tag.startswith("{") and c.tag != "seclabel"]

    def attrs(self, el: ET.Element, path: str, allowed: set[str]) -> None:
        for name in el.attrib:
            if name not in allowed and not name.startswith("{"):
                self.refuse(_at(path, name), f"PVC cannot express the attribute {name!r} here; remove it")

    def only(self, el: ET.Element, path: str, allowed: set[str], attrs: set[str] | None = None) -> None:
        """Refuse every attribute outside `attrs` and every child outside `allowed` (children not checked)."""
        self.attrs(el, path, attrs or set())
        for child, cpath in self.kids(el, path):
            if child.tag not in allowed:
                self.refuse(cpath, f"PVC cannot express <{_qname(child.tag)}> here; remove it")

    def value(self, el: ET.Element, path: str, attr: str, allowed: set[str] | tuple[str, ...], why: str) -> bool:
        value = el.get(attr)
        if value is not None and value not in allowed:
            self.refuse(_at(path, attr), f"{value!r}: {why}")
            return False
        return True

    def integer(self, text: str | None, path: str) -> int | None:
        if text is None or not _INT_RE.match(text):
            self.refuse(path, f"{text!r} is not a whole number")
            return None
        return int(text)

    # -- the scan: foreign namespaces and security labels, anywhere ----------------------------------------
    def scan(self, el: ET.Element, path: str, attributes_only: bool = False) -> None:
        for name in el.attrib:
            if name.startswith("{"):
                self.refuse(_at(path, _qname(name)), "attributes from other XML namespaces are not allowed")
        for child, cpath in _children(el, path):
            if attributes_only or (child.tag == "metadata" and path == ""):
                self.scan(child, cpath, True)  # its elements: only PVC's namespace, checked by `metadata`
            elif child.tag.startswith(f"{{{QEMU_NS}}}"):
                self.refuse(cpath, "raw QEMU arguments and overrides are not allowed; PVC renders the whole VM")
            elif child.tag.startswith("{"):
                uri = child.tag[1:].partition("}")[0]
                self.refuse(cpath, f"elements from other XML namespaces ({uri}) are not allowed")
            elif child.tag == "seclabel":
                self.refuse(cpath, _REFUSED_TOP["seclabel"])
            else:
                self.scan(child, cpath)

    # -- the domain ---------------------------------------------------------------------------------------
    def domain(self, root: ET.Element) -> None:
        self.attrs(root, "", {"type", "id"})
        self.value(root, "", "type", ("kvm", "qemu"), "PVC runs VMs with KVM or QEMU (TCG); it picks which")
        handlers = {  # in the order they run: later ones use what earlier ones read
            "name": self.name,
            "uuid": self.uuid,
            "description": self.description,
            "memory": self.memory,
            "currentMemory": self.current_memory,
            "vcpu": self.vcpu,
            "os": self.os,
            "features": self.features,
            "cpu": self.cpu,
            "clock": self.clock,
            "on_poweroff": self.lifecycle,
            "on_reboot": self.lifecycle,
            "on_crash": self.lifecycle,
            "pm": self.pm,
            "resource": self.resource,
            "devices": self.devices,
            "metadata": self.metadata,
        }
        found: dict[str, tuple[ET.Element, str]] = {}
        for child, path in self.kids(root, ""):
            if child.tag not in handlers:
                self.refuse(path, _REFUSED_TOP.get(child.tag, f"PVC cannot express <{child.tag}>; remove it"))
            elif child.tag in found:
                self.refuse(path, f"<{child.tag}> is given more than once")
            else:
                found[child.tag] = (child, path)
        for tag in ("name", "memory"):
            if tag not in found:
                self.refuse(tag, f"the domain has no <{tag}>")
        if "devices" not in found:
            found["devices"] = (ET.Element("devices"), "devices")
        if "os" not in found:
            self.put(("machine",), "pc", "os")  # libvirt's default x86 machine
        for tag, handler in handlers.items():
            if tag in found:
                handler(*found[tag])
        self.finish_disks()
        if self.cpu_auto and self.data.get("cpu_model") in (None, TCG_CPU_MODEL):
            self.data.pop("cpu_model", None)

    def name(self, el: ET.Element, path: str) -> None:
        self.only(el, path, set())
        self.put(("name",), (el.text or "").strip(), path)

    def uuid(self, el: ET.Element, path: str) -> None:
        self.only(el, path, set())
        self.put(("uuid",), (el.text or "").strip(), path)

    def description(self, el: ET.Element, path: str) -> None:
        self.only(el, path, set())
        if el.text:
            self.put(("description",), el.text, path)

    def _mib(self, el: ET.Element, path: str) -> int | None:
        unit = el.get("unit", "KiB")
        amount = self.integer(el.text, path)
        if unit.lower() not in _UNITS:
            self.refuse(f"{path}/@unit", f"{unit!r} is not a unit libvirt knows")
            return None
        if amount is None:
            return None
        size = amount * _UNITS[unit.lower()]
        if size % 1024**2:
            self.refuse(path, f"{amount} {unit} is not a whole number of MiB")
            return None
        return size // 1024**2

    def memory(self, el: ET.Element, path: str) -> None:
        self.only(el, path, set(), {"unit"})
        mib = self._mib(el, path)
        if mib is not None:
            self.put(("memory_mib",), mib, path)

    def current_memory(self, el: ET.Element, path: str) -> None:
        self.only(el, path, set(), {"unit"})
        mib = self._mib(el, path)
        if mib is not None and "memory_mib" in self.data and mib != self.data["memory_mib"]:
            self.refuse(path, "memory ballooned below <memory> at start is not supported; remove <currentMemory>")

    def vcpu(self, el: ET.Element, path: str) -> None:
        self.only(el, path, set(), {"placement", "current"})
        self.value(el, path, "placement", ("static",), "PVC does not place vCPUs on host CPUs (no numad)")
        count = self.integer(el.text, path)
        if count is None:
            return
        if el.get("current") is not None and self.integer(el.get("current"), f"{path}/@current") != count:
            self.refuse(f"{path}/@current", "vCPU hot-plug is not supported; remove 'current'")
        self.put(("vcpus",), count, path)

    def lifecycle(self, el: ET.Element, path: str) -> None:
        self.only(el, path, set())
        want = _LIFECYCLE[el.tag]
        if (el.text or "").strip() != want:
            self.refuse(path, f"PVC sets <{el.tag}> to '{want}' (it restarts or recovers VMs itself)")

    def resource(self, el: ET.Element, path: str) -> None:
        self.only(el, path, {"partition"})
        for child, cpath in self.kids(el, path):
            if child.tag == "partition" and (child.text or "").strip() != "/machine":
                self.refuse(cpath, "PVC places VMs in the /machine partition")

    def features(self, el: ET.Element, path: str) -> None:
        self.attrs(el, path, set())
        for child, cpath in self.kids(el, path):
            if child.tag in _FEATURES_PVC_SETS:
                self.only(child, cpath, set())
            elif child.tag == "vmport":
                self.only(child, cpath, set(), {"state"})
                self.value(child, cpath, "state", ("off",), "the VMware port is not supported")
            else:
                self.refuse(cpath, f"the hypervisor feature <{child.tag}> is not supported (PVC sets acpi and apic)")

    def clock(self, el: ET.Element, path: str) -> None:
        self.only(el, path, {"timer"}, {"offset"})
        offset = el.get("offset", "utc")
        if offset in ("utc", "localtime"):
            self.put(("clock",), offset, f"{path}/@offset")
        else:
            self.refuse(f"{path}/@offset", f"{offset!r}: the clock is 'utc' or 'localtime'")
        for child, cpath in self.kids(el, path):
            if child.tag == "timer":  # PVC sets its own timers (rtc catch-up, pit delay, no hpet)
                self.only(child, cpath, set(), {"name", "tickpolicy", "present"})
                self.value(child, cpath, "name", _TIMERS, "not a timer PVC knows")

    def pm(self, el: ET.Element, path: str) -> None:
        self.only(el, path, {"suspend-to-mem", "suspend-to-disk"})
        for child, cpath in self.kids(el, path):
            self.only(child, cpath, set(), {"enabled"})  # PVC turns guest suspend off: a suspended VM cannot move

    # -- os -----------------------------------------------------------------------------------------------
    def os(self, el: ET.Element, path: str) -> None:
        self.attrs(el, path, {"firmware"})
        firmware = el.get("firmware")
        if firmware is not None:
            if firmware in ("efi", "bios"):
                self.put(("firmware",), "uefi" if firmware == "efi" else "bios", f"{path}/@firmware")
            else:
                self.refuse(f"{path}/@firmware", f"{firmware!r}: the firmware is 'bios' or 'efi'")
        boot: list[str] = []
        machine_seen = False
        for child, cpath in self.kids(el, path):
            tag = child.tag
            if tag == "type":
                machine_seen = True
                self.os_type(child, cpath)
            elif tag == "loader":
                self.loader(child, cpath, firmware)
            elif tag == "nvram":
                self.nvram(child, cpath)
            elif tag == "boot":
                self.only(child, cpath, set(), {"dev"})
                self.origin[("boot", len(boot))] = f"{cpath}/@dev"
                boot.append(child.get("dev", ""))
            elif tag in ("kernel", "initrd", "cmdline", "dtb", "initarg", "init", "initdir", "inituser", "initgroup"):
                self.refuse(cpath, "booting a kernel or init from the host is not allowed; boot from a disk")
            elif tag == "acpi":
                self.refuse(cpath, "ACPI tables from host files are not allowed; remove them")
            elif tag == "firmware":
                self.firmware_features(child, cpath)
            elif tag == "bios":  # PVC sets SeaBIOS's serial output itself (with a serial console)
                self.only(child, cpath, set(), {"useserial", "rebootTimeout"})
                self.value(child, cpath, "useserial", ("yes", "no"), "'yes' or 'no'")
                if child.get("rebootTimeout") is not None:
                    self.integer(child.get("rebootTimeout"), f"{cpath}/@rebootTimeout")
            else:
                self.refuse(cpath, f"PVC cannot express <os><{tag}>; remove it")
        if not machine_seen:
            self.put(("machine",), "pc", path)  # libvirt's default x86 machine
        if boot:
            self.put(("boot",), boot, path)

    def os_type(self, el: ET.Element, path: str) -> None:
        self.only(el, path, set(), {"arch", "machine"})
        if (el.text or "").strip() != "hvm":
            self.refuse(path, "PVC runs full virtual machines ('hvm')")
        self.value(el, path, "arch", ("x86_64",), "PVC runs x86_64 VMs")
        machine = el.get("machine", "pc")
        if machine in ("pc", "q35") or re.fullmatch(r"pc-i440fx-[0-9.]+", machine):
            self.put(("machine",), "q35" if machine == "q35" else "pc", f"{path}/@machine")
        elif re.fullmatch(r"pc-q35-[0-9.]+", machine):
            self.put(("machine",), "q35", f"{path}/@machine")
        else:
            self.refuse(f"{path}/@machine", f"{machine!r}: the machine type is 'pc' or 'q35'")

    def loader(self, el: ET.Element, path: str, firmware: str | None) -> None:
        self.only(el, path, set(), {"readonly", "type", "secure", "format"})
        self.value(el, path, "readonly", ("yes",), "UEFI code is read-only")
        self.value(el, path, "type", ("pflash",), "UEFI is loaded as pflash")
        self.value(el, path, "secure", ("no",), "secure boot is not supported")
        self.value(el, path, "format", ("raw",), "UEFI code is raw")
        text = (el.text or "").strip()
        if text and text not in UEFI_CODE:
            self.refuse(path, f"firmware files are chosen by PVC; remove the path (one of {', '.join(UEFI_CODE)})")
        if firmware == "bios":
            self.refuse(path, "a UEFI loader with firmware='bios'; remove one of them")
        self.put(("firmware",), "uefi", path)

    def nvram(self, el: ET.Element, path: str) -> None:
        self.only(el, path, set(), {"template", "format", "templateFormat"})
        self.value(el, path, "template", UEFI_VARS, "UEFI variable templates are chosen by PVC; remove it")
        self.value(el, path, "format", ("raw",), "UEFI variables are raw")
        self.value(el, path, "templateFormat", ("raw",), "UEFI variables are raw")
        text = (el.text or "").strip()
        name = self.data.get("name", "")
        if text and text != f"{NVRAM_DIR}/{name}_VARS.fd":
            self.refuse(path, f"UEFI variables are kept by libvirt in {NVRAM_DIR}; remove the path")

    def firmware_features(self, el: ET.Element, path: str) -> None:
        self.only(el, path, {"feature"})
        for child, cpath in self.kids(el, path):
            self.only(child, cpath, set(), {"enabled", "name"})
            if child.get("enabled") != "no":
                self.refuse(cpath, "firmware features (secure boot, enrolled keys) are not supported")

    # -- cpu ----------------------------------------------------------------------------------------------
    def cpu(self, el: ET.Element, path: str) -> None:
        self.attrs(el, path, {"mode", "match", "check", "migratable"})
        mode = el.get("mode", "custom")
        if mode not in ("custom", "host-passthrough"):
            self.refuse(f"{path}/@mode", f"{mode!r}: use host-passthrough (the default under KVM) or a named model")
        self.value(el, path, "migratable", ("on",), "PVC VMs must migrate")
        self.value(el, path, "match", ("exact",), "PVC asks for the model exactly")
        self.value(el, path, "check", ("none", "partial", "full"), "not a CPU check libvirt knows")
        for child, cpath in self.kids(el, path):
            if child.tag == "model" and mode == "custom":
                self.only(child, cpath, set(), {"fallback"})  # PVC forbids a fallback to another model
                self.put(("cpu_model",), (child.text or "").strip(), cpath)
            elif child.tag == "topology":
                self.topology(child, cpath)
            elif (
                child.tag == "feature"
                and mode == "host-passthrough"
                and child.get("name") == "arch-capabilities"
                and child.get("policy") == "disable"
            ):
                self.only(child, cpath, set(), {"name", "policy"})  # PVC sets this itself under KVM
            elif child.tag == "feature":
                self.refuse(cpath, "CPU feature flags are not supported; choose a CPU model (or host-passthrough)")
            else:
                self.refuse(cpath, f"PVC cannot express <cpu><{child.tag}>; remove it")

    def topology(self, el: ET.Element, path: str) -> None:
        self.only(el, path, set(), {"sockets", "dies", "clusters", "cores", "threads"})
        for attr in ("dies", "clusters"):
            self.value(el, path, attr, ("1",), f"PVC's topology has one {attr[:-1]} per socket")
        for attr in ("sockets", "cores", "threads"):
            number = self.integer(el.get(attr, "1"), f"{path}/@{attr}")
            if number is not None:
                self.put(("topology", attr), number, f"{path}/@{attr}")
        self.origin[("topology",)] = path

    # -- devices ------------------------------------------------------------------------------------------
    def devices(self, el: ET.Element, path: str) -> None:
        self.attrs(el, path, set())
        self.data.setdefault("nics", [])
        self.origin[("disks",)] = path
        self.origin[("nics",)] = path
        flags = {"serial_console": False, "guest_agent": False, "rng": False}
        graphics = 0
        consoles: Counter[str] = Counter()
        for child, cpath in self.kids(el, path):
            tag = child.tag
            if tag == "emulator":
                self.only(child, cpath, set())
                if (child.text or "").strip() != EMULATOR:
                    self.refuse(cpath, f"PVC sets the emulator ({EMULATOR}); remove <emulator>")
            elif tag == "disk":
                self.disk(child, cpath)
            elif tag == "interface":
                self.interface(child, cpath)
            elif tag in ("serial", "console"):
                consoles[tag] += 1
                if self.console(child, cpath, first=consoles[tag] == 1):
                    flags["serial_console"] = True
            elif tag == "channel":
                if self.channel(child, cpath, first=not flags["guest_agent"]):
                    flags["guest_agent"] = True
            elif tag == "graphics":
                graphics += 1
                self.graphics(child, cpath, first=graphics == 1)
            elif tag == "video":
                self.video(child, cpath)
            elif tag == "input":
                self.input(child, cpath)
            elif tag == "rng":
                if self.rng(child, cpath, first=not flags["rng"]):
                    flags["rng"] = True
            elif tag == "memballoon":
                self.only(child, cpath, {"address", "alias", "stats"}, {"model", "autodeflate", "freePageReporting"})
                self.value(child, cpath, "model", ("virtio", "none"), "the balloon is virtio (PVC sets it)")
            elif tag == "controller":
                self.controller(child, cpath)
            elif tag == "audio":
                # libvirt adds a silent back-end for VNC, and SPICE's own; every other back-end is on the host
                self.only(child, cpath, set(), {"id", "type"})
                self.value(child, cpath, "type", ("none", "spice"), "audio back-ends on the host are not allowed")
            elif tag in _REFUSED_DEVICES:
                self.refuse(cpath, _REFUSED_DEVICES[tag])
            else:
                self.refuse(cpath, f"PVC cannot express the device <{tag}>; remove it")
        for key, flag in flags.items():
            self.data[key] = flag
        if graphics == 0:
            self.data["graphics"] = "none"

    def controller(self, el: ET.Element, path: str) -> None:
        # PVC renders its own controllers; what a user gives is checked for its type and otherwise dropped
        self.value(el, path, "type", _CONTROLLER_TYPES, "not a controller PVC knows")

    def disk(self, el: ET.Element, path: str) -> None:
        self.attrs(el, path, {"type", "device"})
        kind = el.get("type", "file")
        source = el.find("source")
        if kind != "network":
            attr, why = _DISK_TYPES.get(kind, ("", f"disks of type {kind!r} are not allowed; " + _USE_RBD))
            if source is not None and attr and source.get(attr) is not None:
                self.refuse(f"{path}/source/@{attr}", why)
            else:
                self.refuse(f"{path}/@type", why)
            return
        if source is None:
            self.refuse(f"{path}", "the disk has no <source protocol='rbd' name='pool/volume'/>")
            return
        protocol = source.get("protocol", "")
        if protocol != "rbd":
            self.refuse(
                f"{path}/source/@protocol",
                f"network disks other than Ceph RBD ({protocol!r}) are not allowed (the node would fetch from "
                f"that address); {_USE_RBD}",
            )
            return
        disk: dict[str, Any] = {}
        where: dict[tuple[str, ...], str] = {(): path}
        device = el.get("device", "disk")
        if device not in ("disk", "cdrom"):
            self.refuse(f"{path}/@device", f"{device!r}: a disk is 'disk' or 'cdrom'")
        disk["device"] = device
        where[("device",)] = f"{path}/@device"
        disk["read_only"] = device == "cdrom"
        for child, cpath in self.kids(el, path):
            tag = child.tag
            if tag == "driver":
                self.only(child, cpath, set(), {"name", "type", "cache", "discard"})
                self.value(child, cpath, "name", ("qemu",), "the driver is qemu")
                self.value(child, cpath, "type", ("raw",), "RBD volumes are raw")
                for attr in ("cache", "discard"):
                    if child.get(attr) is not None:
                        disk[attr] = child.get(attr)
                        where[(attr,)] = f"{cpath}/@{attr}"
            elif tag == "source":
                self.rbd_source(child, cpath)
                disk["volume"] = child.get("name", "")
                where[("volume",)] = f"{cpath}/@name"
            elif tag == "target":
                self.only(child, cpath, set(), {"dev", "bus"})
                if child.get("bus") is not None:
                    disk["bus"] = child.get("bus")
                    where[("bus",)] = f"{cpath}/@bus"
            elif tag == "readonly":
                self.only(child, cpath, set())
                disk["read_only"] = True
                where[("read_only",)] = cpath
            elif tag == "auth":
                pass  # PVC sets the client.libvirt secret itself
            elif tag in ("address", "alias"):
                pass  # libvirt assigns them
            elif tag == "backingStore" and len(child) == 0 and not child.attrib:
                pass  # libvirt's "no backing store" marker
            elif tag == "boot":
                self.refuse(cpath, "per-device boot order is not supported; use <os><boot dev='hd|cdrom|network'/>")
            elif tag == "shareable":
                self.refuse(cpath, "a volume shared by two VMs is not allowed (PVC locks each disk to one VM)")
            else:
                self.refuse(cpath, f"PVC cannot express <disk><{tag}>; remove it")
        self.disks.append((disk, where))

    def rbd_source(self, el: ET.Element, path: str) -> None:
        self.attrs(el, path, {"protocol", "name"})
        for child, cpath in self.kids(el, path):
            if child.tag in ("host", "auth"):
                pass  # PVC sets the cluster's monitors and secret itself
            elif child.tag == "config":
                self.refuse(cpath, "a Ceph configuration file from the host is not allowed; PVC sets the monitors")
            else:
                self.refuse(cpath, f"PVC cannot express <source><{child.tag}> on an RBD disk; remove it")

    def interface(self, el: ET.Element, path: str) -> None:
        self.attrs(el, path, {"type"})
        kind = el.get("type", "")
        if kind != "bridge":
            self.refuse(
                f"{path}/@type", _IFACE_TYPES.get(kind, f"interfaces of type {kind!r} are not allowed; {_USE_BRIDGE}")
            )
            return
        i = len(self.data["nics"])
        nic: dict[str, Any] = {}
        self.origin[("nics", i)] = path
        for child, cpath in self.kids(el, path):
            tag = child.tag
            if tag == "source":
                self.only(child, cpath, set(), {"bridge"})
                bridge = child.get("bridge", "")
                match = _BRIDGE_RE.match(bridge)
                if match:
                    nic["network"] = int(match.group(1))
                    self.origin[("nics", i, "network")] = f"{cpath}/@bridge"
                else:
                    self.refuse(f"{cpath}/@bridge", f"{bridge!r} is not a PVC network bridge; {_USE_BRIDGE}")
            elif tag == "mac":
                self.only(child, cpath, set(), {"address"})
                nic["mac"] = child.get("address", "")
                self.origin[("nics", i, "mac")] = f"{cpath}/@address"
            elif tag == "model":
                self.only(child, cpath, set(), {"type"})
                nic["model"] = child.get("type", "")
                self.origin[("nics", i, "model")] = f"{cpath}/@type"
            elif tag == "target":
                self.only(child, cpath, set(), {"dev"})  # the tap's name: libvirt picks it
            elif tag in ("address", "alias"):
                pass
            elif tag in ("script", "downscript"):
                self.refuse(cpath, "host scripts are not allowed")
            elif tag == "rom":
                self.refuse(cpath, "option ROM files from the host are not allowed")
            elif tag in ("vlan", "virtualport"):
                self.refuse(cpath, f"<{tag}> is set by the network; {_USE_BRIDGE}")
            elif tag == "boot":
                self.refuse(cpath, "per-device boot order is not supported; use <os><boot dev='network'/>")
            else:
                self.refuse(cpath, f"PVC cannot express <interface><{tag}>; remove it")
        if "network" not in nic and not any(p.startswith(f"{path}/source") for p, _ in self.problems):
            self.refuse(path, f"the interface has no bridge; {_USE_BRIDGE}")
        self.data["nics"].append(nic)

    def console(self, el: ET.Element, path: str, first: bool) -> bool:
        self.attrs(el, path, {"type"})
        kind = el.get("type", "pty")
        if kind != "pty":
            self.refuse(f"{path}/@type", f"a {el.tag} to {kind!r} is not allowed; {_USE_PTY}")
            return False
        if not first:
            self.refuse(path, f"{_USE_PTY}; remove the other serial ports")
            return False
        for child, cpath in self.kids(el, path):
            tag = child.tag
            if tag == "target":
                self.only(child, cpath, {"model"}, {"port", "type"})
                self.value(child, cpath, "port", ("0",), "the serial console is port 0")
                allowed = ("serial",) if el.tag == "console" else ("isa-serial",)
                self.value(child, cpath, "type", allowed, "the console is the VM's first ISA serial port")
            elif tag == "source":
                self.only(child, cpath, set(), {"path"})  # the pty libvirt allocated
                if not child.get("path", "/dev/pts/").startswith("/dev/pts/"):
                    self.refuse(f"{cpath}/@path", "a pty's path is chosen by libvirt; remove it")
            elif tag == "log":
                pass  # PVC sets the console log file itself
            elif tag in ("address", "alias"):
                pass
            else:
                self.refuse(cpath, f"PVC cannot express <{el.tag}><{tag}>; remove it")
        return True

    def channel(self, el: ET.Element, path: str, first: bool) -> bool:
        self.attrs(el, path, {"type"})
        kind = el.get("type", "")
        target = el.find("target")
        if kind != "unix":
            self.refuse(f"{path}/@type", f"a channel to {kind!r} is not allowed; only the guest agent's is")
            return False
        if target is None or target.get("type") != "virtio" or target.get("name") != GUEST_AGENT:
            self.refuse(path, f"the only channel PVC supports is the guest agent's (virtio, {GUEST_AGENT})")
            return False
        if not first:
            self.refuse(path, "the guest agent channel is given twice")
            return False
        for child, cpath in self.kids(el, path):
            if child.tag == "target":
                self.only(child, cpath, set(), {"type", "name", "state"})
            elif child.tag == "source":
                self.only(child, cpath, set(), {"mode", "path"})
                self.value(child, cpath, "mode", ("bind",), "libvirt makes the agent's socket")
                if not child.get("path", CHANNEL_DIR).startswith(CHANNEL_DIR) or ".." in child.get("path", ""):
                    self.refuse(
                        f"{cpath}/@path", f"the agent's socket is placed by libvirt in {CHANNEL_DIR}; remove it"
                    )
            elif child.tag in ("address", "alias"):
                pass
            else:
                self.refuse(cpath, f"PVC cannot express <channel><{child.tag}>; remove it")
        return True

    def graphics(self, el: ET.Element, path: str, first: bool) -> None:
        self.attrs(el, path, {"type", "port", "autoport", "listen", "tlsPort"})
        kind = el.get("type", "")
        if kind not in ("vnc", "spice"):
            self.refuse(f"{path}/@type", f"{kind!r}: graphics are 'vnc' or 'spice'")
            return
        if not first:
            self.refuse(path, "a VM has one graphics console; remove the others")
            return
        self.put(("graphics",), kind, f"{path}/@type")
        self.value(el, path, "autoport", ("yes",), "PVC lets libvirt pick the port")
        if el.get("autoport") != "yes" and el.get("port", "-1") != "-1":
            self.refuse(f"{path}/@port", "PVC lets libvirt pick the port; remove it (or set autoport='yes')")
        self.value(el, path, "listen", (LOOPBACK,), f"graphics listen on {LOOPBACK} only (reach them through the node)")
        for child, cpath in self.kids(el, path):
            if child.tag == "listen":
                self.only(child, cpath, set(), {"type", "address"})
                self.value(child, cpath, "type", ("address",), f"graphics listen on the address {LOOPBACK} only")
                self.value(child, cpath, "address", (LOOPBACK,), f"graphics listen on {LOOPBACK} only")
            else:
                self.refuse(cpath, f"PVC cannot express <graphics><{child.tag}>; remove it")

    def video(self, el: ET.Element, path: str) -> None:
        # PVC renders a VGA adapter when the VM has graphics; a user's video model is checked and replaced
        self.only(el, path, {"model", "address", "alias"})
        for child, cpath in self.kids(el, path):
            if child.tag == "model":
                self.only(child, cpath, set(), {"type", "vram", "ram", "vgamem", "heads", "primary"})
                self.value(child, cpath, "type", _VIDEO_MODELS, "not a video model PVC knows")

    def input(self, el: ET.Element, path: str) -> None:
        self.only(el, path, {"address", "alias"}, {"type", "bus"})
        self.value(el, path, "type", _INPUT_TYPES, "only emulated mice, keyboards and tablets (no host devices)")
        self.value(el, path, "bus", _INPUT_BUSES, "not an input bus PVC knows")

    def rng(self, el: ET.Element, path: str, first: bool) -> bool:
        self.attrs(el, path, {"model"})
        ok = self.value(el, path, "model", ("virtio",), "the RNG is virtio")
        for child, cpath in self.kids(el, path):
            if child.tag == "backend":
                self.only(child, cpath, set(), {"model"})
                model = child.get("model", "")
                if model == "random":
                    if (child.text or "").strip() not in ("", "/dev/urandom", "/dev/random"):
                        self.refuse(cpath, "the RNG reads /dev/urandom; remove the path")
                        ok = False
                elif model != "builtin":
                    self.refuse(f"{cpath}/@model", f"{model!r}: an RNG fed from a host socket or TCP is not allowed")
                    ok = False
            elif child.tag not in ("address", "alias"):
                self.refuse(cpath, f"PVC cannot express <rng><{child.tag}>; remove it")
        if not first:
            self.refuse(path, "the RNG is given twice")
            return False
        return ok

    # -- PVC's metadata -----------------------------------------------------------------------------------
    def metadata(self, el: ET.Element, path: str) -> None:
        self.attrs(el, path, set())
        done = False
        for child, cpath in _children(el, path):
            if child.tag == f"{{{PVC_NS}}}vm" and done:
                self.refuse(cpath, "PVC's metadata is given more than once")
            elif child.tag == f"{{{PVC_NS}}}vm":
                self.pvc_vm(child, cpath)
                done = True
            else:
                self.refuse(cpath, f"only PVC's own metadata ({PVC_NS}) is kept; remove it")

    def pvc_vm(self, el: ET.Element, path: str) -> None:
        self.attrs(el, path, set())
        p = f"{{{PVC_NS}}}"
        tags: list[str] = []
        for child, cpath in self.kids_ns(el, path):
            tag = child.tag.removeprefix(p)
            if tag == "tag":
                self.only_ns(child, cpath, set(), set())
                self.origin[("tags", len(tags))] = cpath
                tags.append(child.text or "")
            elif tag == "placement":
                self.placement(child, cpath)
            elif tag == "cpu":
                self.only_ns(child, cpath, set(), {"model"})
                if self.value(child, cpath, "model", ("auto",), "PVC's metadata marks only the automatic CPU model"):
                    self.cpu_auto = True
            elif tag == "migration":
                self.only_ns(child, cpath, set(), {"method", "max-downtime-ms", "timeout-s"})
                if child.get("method") is not None:
                    self.put(("migration", "method"), child.get("method"), f"{cpath}/@method")
                for attr, key in (("max-downtime-ms", "max_downtime_ms"), ("timeout-s", "timeout_s")):
                    if child.get(attr) is not None:
                        number = self.integer(child.get(attr), f"{cpath}/@{attr}")
                        if number is not None:
                            self.put(("migration", key), number, f"{cpath}/@{attr}")
            elif tag == "disk":
                self.only_ns(child, cpath, set(), {"volume", "size"})
                given = child.get("size")
                size = None if given is None else self.integer(given, f"{cpath}/@size")
                if given is None or size is not None:
                    self.disk_meta[child.get("volume", "")] = (size, cpath)
            else:
                self.refuse(cpath, f"PVC's metadata has no <{_qname(child.tag)}>; remove it")
        if tags:
            self.put(("tags",), tags, path)

    def finish_disks(self) -> None:
        """The disks in PVC's order (its metadata lists them; libvirt sorts them by bus), with their sizes."""
        rank = {volume: n for n, volume in enumerate(self.disk_meta)}
        disks = sorted(self.disks, key=lambda dw: rank.get(dw[0].get("volume", ""), len(rank)))
        self.data["disks"] = []
        for i, (disk, where) in enumerate(disks):
            meta = self.disk_meta.pop(disk.get("volume", ""), None)
            if meta is not None and meta[0] is not None:
                disk["size"] = meta[0]
                where[("size",)] = f"{meta[1]}/@size"
            self.data["disks"].append(disk)
            for rel, path in where.items():
                self.origin[("disks", i, *rel)] = path
        for volume, (_, path) in self.disk_meta.items():
            self.refuse(f"{path}/@volume", f"no disk of this VM is on volume {volume!r}")

    def kids_ns(self, el: ET.Element, path: str) -> list[tuple[ET.Element, str]]:
        """The children of an element of PVC's metadata; any outside PVC's namespace is refused."""
        out = []
        for child, cpath in _children(el, path):
            if child.tag.startswith(f"{{{PVC_NS}}}"):
                out.append((child, cpath))
            else:
                self.refuse(cpath, f"PVC's metadata has no <{_qname(child.tag)}>; remove it")
        return out

    def only_ns(self, el: ET.Element, path: str, allowed: set[str], attrs: set[str]) -> None:
        self.attrs(el, path, attrs)
        for child, cpath in self.kids_ns(el, path):
            if child.tag.removeprefix(f"{{{PVC_NS}}}") not in allowed:
                self.refuse(cpath, f"PVC's metadata has no <{_qname(child.tag)}> here; remove it")

    def placement(self, el: ET.Element, path: str) -> None:
        self.only_ns(el, path, {"node"}, {"autostart", "selector"})
        if self.value(el, path, "autostart", ("yes", "no"), "autostart is 'yes' or 'no'"):
            self.put(("placement", "autostart"), el.get("autostart", "no") == "yes", f"{path}/@autostart")
        if el.get("selector") is not None:
            self.put(("placement", "selector"), el.get("selector"), f"{path}/@selector")
        nodes: list[str] = []
        for child, cpath in self.kids_ns(el, path):
            self.only_ns(child, cpath, set(), set())
            self.origin[("placement", "node_limit", len(nodes))] = cpath
            nodes.append(child.text or "")
        if nodes:
            self.put(("placement", "node_limit"), nodes, path)


def _parse(text: str) -> ET.Element:
    if len(text) > MAX_XML:
        raise VmXmlError([("(document)", f"the XML is {len(text)} characters long; at most {MAX_XML} are accepted")])

    class Refused(Exception):
        pass

    depth = 0

    def doctype(*_: object) -> None:
        raise Refused("a <!DOCTYPE> is not allowed in a domain XML (it declares entities); remove it")

    def start(*_: object) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise Refused(f"elements are nested deeper than {MAX_DEPTH} levels; a domain XML is not")

    def end(*_: object) -> None:
        nonlocal depth
        depth -= 1

    # First pass with expat alone: refuse any DOCTYPE (entity declarations: billion laughs, external entities)
    # before a single entity is declared, let alone expanded; and any nesting deep enough to exhaust a walk.
    probe = expat.ParserCreate()
    probe.StartDoctypeDeclHandler = doctype
    probe.StartElementHandler = start
    probe.EndElementHandler = end
    try:
        probe.Parse(text, True)
    except Refused as exc:
        raise VmXmlError([("(document)", str(exc))]) from None
    except expat.ExpatError as exc:
        where = f"line {exc.lineno}, column {exc.offset + 1}"
        raise VmXmlError([(where, f"not well-formed XML: {expat.ErrorString(exc.code)}")]) from None
    return ET.fromstring(text)


def _loc_path(origin: dict[tuple[Any, ...], str], loc: tuple[Any, ...]) -> str:
    for n in range(len(loc), 0, -1):
        if loc[:n] in origin:
            return origin[loc[:n]]
    return ".".join(str(part) for part in loc) or "(domain)"


def bridged_networks(xml: str) -> set[int]:
    """The VNIs of the PVC network bridges a domain XML's interfaces are plugged into, whatever else it holds (what
    a VM refused by the allowlist may still run with); none for an XML that does not parse."""
    try:
        root = _parse(xml)
    except (VmXmlError, ET.ParseError):
        return set()
    found = (src.get("bridge", "") for src in root.iterfind("./devices/interface[@type='bridge']/source"))
    return {int(m.group(1)) for m in map(_BRIDGE_RE.match, found) if m}


def import_xml(xml: str) -> VmDefinition:
    """The VM definition a libvirt domain XML describes, or VmXmlError listing every part PVC refuses."""
    root = _parse(xml)
    if root.tag != "domain":
        raise VmXmlError([(_qname(root.tag), f"the root element is <{_qname(root.tag)}>; a domain XML has <domain>")])
    imp = _Importer()
    imp.scan(root, "")
    imp.domain(root)
    problems = imp.problems
    try:
        definition = VmDefinition.model_validate(imp.data)
    except ValidationError as exc:
        reported = list(problems)
        for error in exc.errors():
            loc = tuple(error["loc"])
            path = _loc_path(imp.origin, loc)
            if error["type"] == "missing" and any(p == path or p.startswith(f"{path}/") for p, _ in reported):
                continue  # what is missing was refused already
            message = error["msg"].removeprefix("Value error, ")
            if loc == ("memory_mib",) and error["type"] not in ("value_error", "missing"):
                message = f"{error['input']} MiB: the memory is {MIN_MEMORY_MIB}-{MAX_MEMORY_MIB} MiB"
            elif error["type"] not in ("value_error", "missing") and not isinstance(error.get("input"), dict | list):
                message = f"{error['input']!r}: {message}"
            if (path, message) not in problems:
                problems.append((path, message))
        raise VmXmlError(problems) from None
    if problems:
        raise VmXmlError(problems)
    return definition
