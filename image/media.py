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
from pathlib import Path

from pvc.image.recipe import Recipe
from pvc.image.run import BuildError, Runner

STAGE = "media"
GRUB_MODULES = "part_gpt part_msdos fat iso9660 search search_label serial linux normal configfile echo test"
GPTMBR = Path("/usr/lib/syslinux/mbr/gptmbr.bin")
MIB = 1024 * 1024


def grub_cfg(recipe: Recipe) -> str:
    return (
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        f"set timeout={recipe.grub_timeout}\n"
        "set default=0\n"
        'menuentry "PVC node" {\n'
        f"    linux /live/vmlinuz {recipe.kernel_args}\n"
        "    initrd /live/initrd.img\n"
        "}\n"
    )


def grub_embed_cfg(recipe: Recipe) -> str:
    """The config built into BOOTX64.EFI: find the PVCBOOT partition and read its grub.cfg."""
    return (
        f"search --no-floppy --label {recipe.volume_label} --set=root\n"
        "set prefix=($root)/boot/grub\n"
        "configfile ($root)/boot/grub/grub.cfg\n"
    )


def syslinux_cfg(recipe: Recipe) -> str:
    return (
        "SERIAL 0 115200\n"
        "PROMPT 0\n"
        f"TIMEOUT {max(recipe.grub_timeout, 1) * 10}\n"
        "DEFAULT pvc\n"
        "LABEL pvc\n"
        "  LINUX /live/vmlinuz\n"
        "  INITRD /live/initrd.img\n"
        f"  APPEND {recipe.kernel_args}\n"
    )


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


def usb_image(files: dict[str, Path], dest: Path, recipe: Recipe, work: Path, runner: Runner) -> None:
    """`files`: vmlinuz, initrd.img, filesystem.squashfs."""
    (work / "grub-embed.cfg").write_text(grub_embed_cfg(recipe))
    (work / "grub.cfg").write_text(grub_cfg(recipe))
    (work / "syslinux.cfg").write_text(syslinux_cfg(recipe))
    efi = work / "BOOTX64.EFI"
    runner.run(
        [
            *("grub-mkstandalone", "-O", "x86_64-efi", f"--modules={GRUB_MODULES}", "--locales=", "--themes="),
            *("--fonts=", "-o", efi, f"boot/grub/grub.cfg={work / 'grub-embed.cfg'}"),
        ]
    )
    content = sum(p.stat().st_size for p in [efi, *files.values()])
    esp_mib = content // MIB + 32
    esp = work / "esp.img"
    runner.run(["mkfs.vfat", "-F", "32", "-n", recipe.volume_label, "-C", esp, str(esp_mib * 1024)])
    mt: list[str | Path] = ["-i", esp]
    runner.run(["mmd", *mt, "::/EFI", "::/EFI/BOOT", "::/boot", "::/boot/grub", "::/live", "::/syslinux"])
    runner.run(["mcopy", *mt, efi, "::/EFI/BOOT/BOOTX64.EFI"])
    runner.run(["mcopy", *mt, work / "grub.cfg", "::/boot/grub/grub.cfg"])
    runner.run(["mcopy", *mt, work / "syslinux.cfg", "::/syslinux/syslinux.cfg"])
    for name, path in files.items():
        runner.run(["mcopy", *mt, path, f"::/live/{name}"])
    runner.run(["syslinux", "--install", "--directory", "/syslinux", esp])
    # GPT: 1 MiB before the ESP, 1 MiB after (the backup table). Never `sgdisk -q`: it silently does nothing.
    with dest.open("wb") as fh:
        fh.truncate((esp_mib + 2) * MIB)
    runner.run(
        ["sgdisk", "-o", "-n", "1:2048:0", "-t", "1:EF00", "-c", f"1:{recipe.volume_label}", "-A", "1:set:2", dest]
    )
    runner.run(["dd", f"if={esp}", f"of={dest}", "bs=1M", "seek=1", "conv=notrunc", "status=none"])
    runner.run(["dd", f"if={GPTMBR}", f"of={dest}", "bs=440", "count=1", "conv=notrunc", "status=none"])
    table = runner.output(["sgdisk", "-p", dest])
    if recipe.volume_label not in table:
        raise BuildError(STAGE, f"sgdisk wrote no {recipe.volume_label} partition into {dest.name}", table)
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
