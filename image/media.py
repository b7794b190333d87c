"""Stage 5, boot media: the GPT USB/disk image, the hybrid ISO and the iPXE script, from kernel, initrd and squashfs.

Every medium boots the same three files with the same kernel arguments through live-boot:
- pvc-usb.img: GPT, one FAT32 ESP labelled PVCBOOT (also marked legacy-BIOS-bootable) holding
  /EFI/BOOT/BOOTX64.EFI (grub-mkstandalone), /boot/grub/grub.cfg, /syslinux (BIOS, with gptmbr.bin as the MBR) and
  /live/{vmlinuz,initrd.img,filesystem.squashfs}. Built without loop devices (mkfs.vfat -C, mtools, sgdisk, dd).
- pvc.iso: grub-mkrescue hybrid ISO (El Torito BIOS + UEFI, isohybrid: CD or USB stick).
- boot.ipxe: iPXE script fetching kernel, initrd and (through live-boot's fetch=) the squashfs over HTTP.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pvc.image.recipe import Recipe
from pvc.image.run import BuildError, Runner

STAGE = "media"
GRUB_MODULES = "part_gpt part_msdos fat iso9660 search search_label serial linux normal configfile echo test"
GPTMBR = Path("/usr/lib/syslinux/mbr/gptmbr.bin")
MIB = 1024 * 1024


def grub_menu(title: str, kernel: str, initrd: str, args: str, timeout: int) -> str:
    """A one-entry grub.cfg on the serial port and the screen."""
    return (
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        f"set timeout={timeout}\n"
        "set default=0\n"
        f'menuentry "{title}" {{\n'
        f"    linux {kernel} {args}\n"
        f"    initrd {initrd}\n"
        "}\n"
    )


def grub_search_cfg(label: str) -> str:
    """The config built into BOOTX64.EFI: find the FAT volume labelled `label` and read its grub.cfg."""
    return (
        f"search --no-floppy --label {label} --set=root\n"
        "set prefix=($root)/boot/grub\n"
        "configfile ($root)/boot/grub/grub.cfg\n"
    )


def syslinux_menu(label: str, kernel: str, initrd: str, args: str, timeout: int) -> str:
    """A one-entry syslinux.cfg on the serial port (PROMPT 0: it boots the entry without waiting)."""
    return (
        "SERIAL 0 115200\n"
        "PROMPT 0\n"
        f"TIMEOUT {max(timeout, 1) * 10}\n"
        f"DEFAULT {label}\n"
        f"LABEL {label}\n"
        f"  LINUX {kernel}\n"
        f"  INITRD {initrd}\n"
        f"  APPEND {args}\n"
    )


def grub_cfg(recipe: Recipe) -> str:
    return grub_menu("PVC node", "/live/vmlinuz", "/live/initrd.img", recipe.kernel_args, recipe.grub_timeout)


def grub_embed_cfg(recipe: Recipe) -> str:
    """The config built into BOOTX64.EFI: find the PVCBOOT partition and read its grub.cfg."""
    return grub_search_cfg(recipe.volume_label)


def syslinux_cfg(recipe: Recipe) -> str:
    return syslinux_menu("pvc", "/live/vmlinuz", "/live/initrd.img", recipe.kernel_args, recipe.grub_timeout)


def ipxe_script(recipe: Recipe) -> str:
    """iPXE script. `${base}` is the HTTP URL of the folder holding vmlinuz, initrd.img and filesystem.squashfs:
    set it before chaining this script, or it defaults to http://<next-server>/pvc. `${pvc_args}` carries node
    arguments (pvc.node=..., pvc.config=...)."""
    return (
        "#!ipxe\n"
        "# PVC node netboot: kernel and initrd over HTTP, live-boot fetches the root (filesystem.squashfs) into RAM.\n"
        "# ${base}: URL of the folder holding vmlinuz, initrd.img and filesystem.squashfs (HTTP, not HTTPS).\n"
        "# ${pvc_args}: node arguments, e.g. pvc.node=node1 or pvc.config=http://server/cluster.toml\n"
        "isset ${base} || set base http://${next-server}/pvc\n"
        "echo PVC: booting from ${base}\n"
        f"kernel ${{base}}/vmlinuz {recipe.kernel_args.replace('boot=live', 'boot=live fetch=${base}/filesystem.squashfs', 1)} ${{pvc_args}}\n"
        "initrd ${base}/initrd.img\n"
        "boot\n"
    )


@dataclass(frozen=True)
class Partition:
    """One GPT partition of a disk image: the filesystem image written into it, or none (the caller fills it)."""

    mib: int
    type: str  # sgdisk type code: EF00 ESP, 8304 Linux x86-64 root
    name: str
    image: Path | None = None
    uuid: str | None = None
    legacy_boot: bool = False  # the attribute syslinux's gptmbr.bin boots from under BIOS


def partition_offsets(parts: list[Partition]) -> list[int]:
    """The start of each partition in MiB: 1 MiB for the GPT, then the partitions back to back."""
    offsets, at = [], 1
    for part in parts:
        offsets.append(at)
        at += part.mib
    return offsets


def disk_mib(parts: list[Partition]) -> int:
    """The disk size: 1 MiB before the partitions, 1 MiB after (the backup table)."""
    return 2 + sum(p.mib for p in parts)


def sgdisk_argv(dest: Path, parts: list[Partition]) -> list[str]:
    argv = ["sgdisk", "-o"]
    sectors = MIB // 512
    for n, (part, start) in enumerate(zip(parts, partition_offsets(parts), strict=True), 1):
        first = start * sectors
        argv += [
            "-n",
            f"{n}:{first}:{first + part.mib * sectors - 1}",
            "-t",
            f"{n}:{part.type}",
            "-c",
            f"{n}:{part.name}",
        ]
        if part.uuid:
            argv += ["-u", f"{n}:{part.uuid}"]
        if part.legacy_boot:
            argv += ["-A", f"{n}:set:2"]
    return [*argv, str(dest)]


def gpt_disk(dest: Path, parts: list[Partition], runner: Runner) -> None:
    """A sparse GPT disk image holding `parts`, with syslinux's gptmbr.bin as its MBR boot code. Never `sgdisk -q`:
    it silently does nothing."""
    with dest.open("wb") as fh:
        fh.truncate(disk_mib(parts) * MIB)
    runner.run(sgdisk_argv(dest, parts))
    for part, start in zip(parts, partition_offsets(parts), strict=True):
        if part.image is not None:
            runner.run(
                ["dd", f"if={part.image}", f"of={dest}", "bs=1M", f"seek={start}", "conv=notrunc,sparse", "status=none"]
            )
    runner.run(["dd", f"if={GPTMBR}", f"of={dest}", "bs=440", "count=1", "conv=notrunc", "status=none"])
    table = runner.output(["sgdisk", "-p", dest])
    for part in parts:
        if part.name not in table:
            raise BuildError(STAGE, f"sgdisk wrote no {part.name} partition into {dest.name}", table)


def esp_image(
    dest: Path, files: dict[str, Path], label: str, grub: str, syslinux: str, work: Path, runner: Runner, mib: int = 0
) -> int:
    """A FAT32 ESP image labelled `label` that boots under UEFI (/EFI/BOOT/BOOTX64.EFI, a grub-mkstandalone image
    that finds the volume by label and reads `grub`) and under BIOS (syslinux with `syslinux`). `files`: path in the
    ESP → file. Built without loop devices (mkfs.vfat -C, mtools). `mib`: its size, or 0 for its content plus 32 MiB.
    Returns the size in MiB."""
    (work / "grub-embed.cfg").write_text(grub_search_cfg(label))
    (work / "grub.cfg").write_text(grub)
    (work / "syslinux.cfg").write_text(syslinux)
    efi = work / "BOOTX64.EFI"
    runner.run(
        [
            *("grub-mkstandalone", "-O", "x86_64-efi", f"--modules={GRUB_MODULES}", "--locales=", "--themes="),
            *("--fonts=", "-o", efi, f"boot/grub/grub.cfg={work / 'grub-embed.cfg'}"),
        ]
    )
    content = sum(p.stat().st_size for p in [efi, *files.values()]) // MIB + 32
    if mib and content > mib:
        raise BuildError(STAGE, f"the ESP needs about {content} MiB, more than the {mib} MiB the recipe gives it")
    mib = mib or content
    runner.run(["mkfs.vfat", "-F", "32", "-n", label, "-C", dest, str(mib * 1024)])
    mt: list[str | Path] = ["-i", dest]
    folders = {"/EFI", "/EFI/BOOT", "/boot", "/boot/grub", "/syslinux"}
    for name in files:
        parent = Path("/" + name.strip("/")).parent
        while str(parent) != "/":
            folders.add(str(parent))
            parent = parent.parent
    runner.run(["mmd", *mt, *(f"::{f}" for f in sorted(folders))])
    runner.run(["mcopy", *mt, efi, "::/EFI/BOOT/BOOTX64.EFI"])
    runner.run(["mcopy", *mt, work / "grub.cfg", "::/boot/grub/grub.cfg"])
    runner.run(["mcopy", *mt, work / "syslinux.cfg", "::/syslinux/syslinux.cfg"])
    for name, path in files.items():
        runner.run(["mcopy", *mt, path, f"::/{name.strip('/')}"])
    runner.run(["syslinux", "--install", "--directory", "/syslinux", dest])
    return mib


def usb_image(files: dict[str, Path], dest: Path, recipe: Recipe, work: Path, runner: Runner) -> None:
    """`files`: vmlinuz, initrd.img, filesystem.squashfs (under /live in the ESP)."""
    esp = work / "esp.img"
    live = {f"live/{name}": path for name, path in files.items()}
    mib = esp_image(esp, live, recipe.volume_label, grub_cfg(recipe), syslinux_cfg(recipe), work, runner)
    gpt_disk(dest, [Partition(mib, "EF00", recipe.volume_label, image=esp, legacy_boot=True)], runner)
    esp.unlink()


def iso_image(files: dict[str, Path], dest: Path, recipe: Recipe, work: Path, runner: Runner) -> None:
    tree = work / "iso"
    (tree / "boot/grub").mkdir(parents=True)
    (tree / "live").mkdir()
    (tree / "boot/grub/grub.cfg").write_text(grub_cfg(recipe))
    for name, path in files.items():
        try:
            os.link(path, tree / "live" / name)
        except OSError:
            shutil.copy2(path, tree / "live" / name)
    runner.run(["grub-mkrescue", "-o", dest, tree, "--", "-volid", recipe.iso_label])
    shutil.rmtree(tree)


def build(files: dict[str, Path], out: Path, recipe: Recipe, work: Path, runner: Runner) -> None:
    usb_image(files, out / "pvc-usb.img", recipe, work, runner)
    iso_image(files, out / "pvc.iso", recipe, work, runner)
    (out / "boot.ipxe").write_text(ipxe_script(recipe))
