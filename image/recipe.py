"""The image recipes: the settings tables every build stage reads (mkosi-style).

Everything that decides what goes into the node image (`Recipe`) and the test guest disk (`GuestRecipe`) is here, as
plain data. Both share the Debian part (`Debian`: suite, mirrors, variant, packages, dpkg path filters). Stages take
a recipe and return plain results; the cache keys are hashes of the parts of the table each stage uses, so changing
a value here rebuilds exactly the stages that depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Bump when a stage's code changes in a way the hashed inputs do not show (e.g. a new mmdebstrap hook).
RECIPE_VERSION = 1

HERE = Path(__file__).resolve().parent
# Files copied into the root as-is (systemd units, drop-ins, sshd config), shipped as package data.
ROOTFS_OVERLAY = HERE / "rootfs"
# The script run inside the chroot at the end of the base stage (disable services, scrub identity).
CUSTOMIZE_SCRIPT = HERE / "hooks" / "customize.sh"
# The test guest's own files (cloud-init settings, networkd DHCP, wait-online) and its customize script.
GUEST_ROOTFS_OVERLAY = HERE / "guest-rootfs"
GUEST_CUSTOMIZE_SCRIPT = HERE / "hooks" / "guest-customize.sh"

# The node package set (installed without recommends, in one apt transaction).
PACKAGES: tuple[str, ...] = (
    # kernel, init, live boot from USB/ISO/PXE
    "linux-image-amd64",
    "systemd-sysv",
    "live-boot",
    "live-boot-initramfs-tools",
    "busybox",
    "zstd",
    # cluster state
    "zookeeper",
    "default-jre-headless",
    # storage
    "ceph-mon",
    "ceph-mgr",
    "ceph-osd",  # bookworm ships ceph-volume inside ceph-osd (there is no ceph-volume package)
    "ceph-common",
    # Python bindings that exist only as Debian packages, and the venv module
    "python3-rados",
    "python3-rbd",
    "python3-libvirt",
    "python3-psycopg2",
    "python3-venv",
    "python3-cryptography",
    "python3-yaml",
    # virtualisation
    "libvirt-daemon-system",
    "libvirt-clients",
    "qemu-system-x86",
    "qemu-block-extra",
    "qemu-utils",
    "ovmf",  # UEFI firmware for VMs whose definition says firmware = "uefi" (vmrender's OVMF_CODE_4M.fd)
    # provisioner database
    "postgresql",
    "patroni",
    "python3-kazoo",  # Patroni's ZooKeeper client (Debian's patroni depends only on pysyncobj)
    # routing, DHCP/DNS for managed networks, firewall, fencing, time
    "frr",
    "dnsmasq",
    "nftables",
    "ipmitool",
    "chrony",
    # bounded logs: size-based rotation of the log files that are not in the journal (docs/storage.md, "Logs")
    "logrotate",
    # base tools
    "openssh-server",
    "iproute2",
    "gdisk",
    "e2fsprogs",
    "dosfstools",
    "util-linux",
    "procps",
    "iputils-ping",
    "ca-certificates",
    "less",
    "sudo",  # the break-glass path: [[users]] sudo = true (docs/security.md)
)

# dpkg path filters (the files are never unpacked; dpkg still lists the packages). No manuals, info pages or
# translations on an appliance or a test guest (about 150 MiB on a node), but every package's copyright file stays
# (the licences travel with the binaries).
DOC_PATH_FILTERS: tuple[str, ...] = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
)
# The node's filters: the documentation above and what a headless node never uses. Together these keep the zstd-3
# squashfs under 600 MB.
DPKG_PATH_FILTERS: tuple[str, ...] = (
    *DOC_PATH_FILTERS,
    # A headless node: no Mesa GL drivers (pulled in through qemu's display libraries) and the LLVM they use,
    # no PostgreSQL JIT (optional; PostgreSQL runs without it) and its LLVM: about 250 MiB.
    "path-exclude=/usr/lib/x86_64-linux-gnu/dri/*",
    "path-exclude=/usr/lib/x86_64-linux-gnu/libLLVM-*",
    "path-exclude=/usr/lib/postgresql/*/lib/llvmjit*",
    "path-exclude=/usr/lib/postgresql/*/lib/bitcode/*",
    # One QEMU emulator: libvirtd probes every qemu-system-* binary at its first start (minutes under TCG, and with
    # no deadline of its own); qemu-system-x86_64 runs i686 guests too, and libvirt uses it for them.
    "path-exclude=/usr/bin/qemu-system-i386",
    "path-exclude=/usr/libexec/qemu-system-i386",
    # Kernel drivers a server node never loads: sound, video capture/TV, wireless, Bluetooth, staging.
    "path-exclude=/usr/lib/modules/*/kernel/sound/*",
    "path-exclude=/usr/lib/modules/*/kernel/drivers/media/*",
    "path-exclude=/usr/lib/modules/*/kernel/drivers/net/wireless/*",
    "path-exclude=/usr/lib/modules/*/kernel/drivers/bluetooth/*",
    "path-exclude=/usr/lib/modules/*/kernel/drivers/staging/*",
    "path-exclude=/usr/lib/modules/*/kernel/net/bluetooth/*",
    "path-exclude=/usr/lib/modules/*/kernel/net/mac80211/*",
    "path-exclude=/usr/lib/modules/*/kernel/net/wireless/*",
)

# Boot: live-boot finds /live/filesystem.squashfs on any medium (or fetches it over HTTP for PXE). The last
# console= is /dev/console, where systemd and pvc-node print progress: the serial port, so IPMI SoL and the lab see
# formation; the kernel prints to both.
KERNEL_ARGS = "boot=live console=tty0 console=ttyS0,115200"

COMPRESSION_LEVELS = {"zstd": ("-Xcompression-level", "3"), "xz": ()}


@dataclass(frozen=True)
class Debian:
    """The Debian root both images start from: one mmdebstrap run (base.py) of these packages from these mirrors."""

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    security_mirror: str = "http://deb.debian.org/debian-security"
    components: str = "main"
    variant: str = "minbase"
    packages: tuple[str, ...] = ()
    dpkg_path_filters: tuple[str, ...] = DOC_PATH_FILTERS
    hook_dirs: tuple[str, ...] = ()  # mmdebstrap --hook-dir folders
    version: int = RECIPE_VERSION

    @property
    def suites(self) -> tuple[str, ...]:
        return (self.suite, f"{self.suite}-updates", f"{self.suite}-security")

    def sources(self) -> list[str]:
        """One-line apt sources for mmdebstrap, in suite order."""
        main, updates, security = self.suites
        return [
            f"deb {self.mirror} {main} {self.components}",
            f"deb {self.mirror} {updates} {self.components}",
            f"deb {self.security_mirror} {security} {self.components}",
        ]


@dataclass(frozen=True)
class Recipe(Debian):
    """Every option of the node image build, in one place. The defaults are the PVC node image."""

    packages: tuple[str, ...] = PACKAGES
    dpkg_path_filters: tuple[str, ...] = DPKG_PATH_FILTERS
    kernel_args: str = KERNEL_ARGS
    compression: str = "zstd"
    # Where the project is installed in the image, and the commands linked into /usr/local/bin.
    venv: str = "/opt/pvc"
    commands: tuple[str, ...] = ("pvc", "pvcd", "pvc-node")
    # Units of this project enabled in the image (their files are under image/rootfs/).
    enable_units: tuple[str, ...] = ("pvc-node.service",)
    # The project's source folders and files: the project layer's cache key.
    project_sources: tuple[str, ...] = (
        "config-schema",
        "nodeos",
        "api",
        "cli",
        "image",
        "installer",
        "pyproject.toml",
        "README.md",
    )
    grub_timeout: int = 1
    volume_label: str = "PVCBOOT"
    iso_label: str = "PVCLIVE"

    def squashfs_options(self) -> list[str]:
        if self.compression not in COMPRESSION_LEVELS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSION_LEVELS)}, not {self.compression!r}")
        return ["-comp", self.compression, *COMPRESSION_LEVELS[self.compression]]


# The test guest (docs/image.md, "Guest image"): a small Debian cloud guest that VMs in tests and the lab boot.
GUEST_PACKAGES: tuple[str, ...] = (
    # kernel and init: the cloud kernel (virtio, no hardware drivers), networkd + resolved for DHCP and DNS
    "linux-image-cloud-amd64",
    "systemd-sysv",
    "systemd-resolved",
    "udev",
    # first boot from a NoCloud seed or the metadata service; growpart for volumes larger than the image
    "cloud-init",
    "cloud-guest-utils",
    # what the tests and the cluster use from inside the guest
    "qemu-guest-agent",
    "openssh-server",
    "iproute2",
    "iputils-ping",
    "netcat-openbsd",
    "curl",
    "ca-certificates",
)


@dataclass(frozen=True)
class GuestRecipe(Debian):
    """Every option of the test guest disk. One disk: GPT with an ESP (syslinux for BIOS, grub for UEFI, the kernel
    and initrd) and an ext4 root, converted to a compressed qcow2."""

    packages: tuple[str, ...] = GUEST_PACKAGES
    # merged /usr the debootstrap way, with usr-is-merged: otherwise apt satisfies init-system-helpers with usrmerge,
    # which brings perl (about 50 MB) into the guest.
    hook_dirs: tuple[str, ...] = ("/usr/share/mmdebstrap/hooks/merged-usr",)
    # The root partition's GPT PARTUUID: the kernel finds its root by it (no initramfs lookup by label needed).
    root_partuuid: str = "795070bd-3ab1-46cc-afd4-13a5a0304e71"
    root_label: str = "pvc-guest"
    # Console: the last console= is /dev/console, where systemd and cloud-init print, so the serial port.
    console_args: str = "console=tty0 console=ttyS0,115200"
    volume_label: str = "PVCGUEST"  # the ESP (FAT label, at most 11 characters)
    grub_timeout: int = 0
    disk_mib: int = 2048  # the disk's virtual size; cloud-init grows the root when the volume is larger
    esp_mib: int = 64
    # Files of the node's overlay (image/rootfs) the guest gets too: sshd's start with one ed25519 host key. Its
    # sshd drop-in is its own (image/guest-rootfs): a node refuses root, the guest lets root in by key.
    shared_files: tuple[str, ...] = ("usr/lib/systemd/system/ssh.service.d/pvc-hostkey.conf",)

    @property
    def kernel_args(self) -> str:
        return f"root=PARTUUID={self.root_partuuid} rw {self.console_args}"

    def fstab(self) -> str:
        return f"PARTUUID={self.root_partuuid} / ext4 rw,errors=remount-ro 0 1\n"
