"""The test guest disk (`pvc-image guest`): a small Debian 12 cloud guest that tests and the lab boot as VMs.

Two stages, each cached under its input key in the same cache as the node image (cache.py):

    [1/2] guest rootfs   mmdebstrap of the guest packages, image/guest-rootfs synced in,   keyed by packages, suites,
                         hooks/guest-customize.sh                                          mirror, overlay, script
    [2/2] guest disk     GPT: an ESP (kernel, initrd, grub for UEFI, syslinux for BIOS)     keyed by the rootfs and
                         and an ext4 root (mkfs.ext4 -d), converted to a compressed qcow2  the disk settings

`build_guest()` is what the CLI, the tests and the bench call.
"""

from __future__ import annotations

import datetime
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pvc.image import base, manifest, media
from pvc.image.build import DEFAULT_PROJECT, Progress, Stages, check_host, publish
from pvc.image.cache import Cache
from pvc.image.inputs import guest_base_key, guest_disk_key, hash_files
from pvc.image.project import copy_overlay
from pvc.image.recipe import GUEST_CUSTOMIZE_SCRIPT, GUEST_ROOTFS_OVERLAY, HERE, ROOTFS_OVERLAY, GuestRecipe
from pvc.image.run import Runner

STAGES = 2
ROOTFS_STAGE = "guest rootfs"
DISK_STAGE = "guest disk"
DEFAULT_OUT = DEFAULT_PROJECT / "build" / "guest"
QCOW2 = "pvc-guest.qcow2"
MANIFEST = "manifest.json"
ARTIFACTS = (QCOW2, MANIFEST)
HOST_TOOLS = {
    ROOTFS_STAGE: ["mmdebstrap", "chroot", "mount"],
    DISK_STAGE: ["grub-mkstandalone", "mkfs.vfat", "mcopy", "mmd", "syslinux", "sgdisk", "mkfs.ext4", "qemu-img"],
}
ROOT_TYPE = "8304"  # GPT type: Linux x86-64 root (the Discoverable Partitions Specification)
MIB = 1024 * 1024


@dataclass(frozen=True)
class GuestArtifacts:
    """The guest disk and its manifest in the output directory, and whether they came from the cache."""

    qcow2: Path
    manifest: Path
    key: str
    cached: bool


def overlay_sources(recipe: GuestRecipe) -> tuple[str, ...]:
    """The overlay files of the guest, relative to image/: its own folder and the files it shares with the node."""
    return (GUEST_ROOTFS_OVERLAY.name, *(f"{ROOTFS_OVERLAY.name}/{f}" for f in recipe.shared_files))


def stage_overlay(recipe: GuestRecipe, dest: Path) -> list[str]:
    """Everything synced into the guest's root before its customize script: image/guest-rootfs, the shared node
    files and /etc/fstab. Returns the paths in the root."""
    dest.mkdir(mode=0o755, parents=True)
    copied = copy_overlay(GUEST_ROOTFS_OVERLAY, dest)
    for rel in recipe.shared_files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        shutil.copyfile(ROOTFS_OVERLAY / rel, target)
        target.chmod(0o644)
        copied.append(f"/{rel}")
    (dest / "etc").mkdir(exist_ok=True, mode=0o755)
    (dest / "etc/fstab").write_text(recipe.fstab())
    return sorted([*copied, "/etc/fstab"])


def keys(recipe: GuestRecipe) -> dict[str, str]:
    """The cache key of each stage; `keys["guest"]` hashes every input."""
    rootfs = guest_base_key(recipe, GUEST_CUSTOMIZE_SCRIPT.read_bytes(), hash_files(HERE, overlay_sources(recipe)))
    return {"guest-base": rootfs, "guest": guest_disk_key(rootfs, recipe)}


def partitions(recipe: GuestRecipe, esp: Path | None = None) -> list[media.Partition]:
    """The guest disk's GPT: the ESP (also legacy-BIOS-bootable, for syslinux) and the root filling the rest."""
    root_mib = recipe.disk_mib - 2 - recipe.esp_mib
    return [
        media.Partition(recipe.esp_mib, "EF00", recipe.volume_label, image=esp, legacy_boot=True),
        media.Partition(root_mib, ROOT_TYPE, recipe.root_label, uuid=recipe.root_partuuid),
    ]


def mkfs_argv(tree: Path, disk: Path, recipe: GuestRecipe) -> list[str]:
    """mkfs.ext4 writing the root partition straight into the disk image (at its offset), filled from `tree`."""
    part = partitions(recipe)[1]
    offset = media.partition_offsets(partitions(recipe))[1] * MIB
    return [
        *("mkfs.ext4", "-q", "-F", "-L", recipe.root_label, "-d", str(tree)),
        *("-E", f"offset={offset}", str(disk), f"{part.mib}M"),
    ]


def boot_menus(recipe: GuestRecipe) -> tuple[str, str]:
    """(grub.cfg, syslinux.cfg) of the ESP: the kernel and initrd at its top, the root by PARTUUID."""
    grub = media.grub_menu("PVC test guest", "/vmlinuz", "/initrd.img", recipe.kernel_args, recipe.grub_timeout)
    syslinux = media.syslinux_menu("guest", "/vmlinuz", "/initrd.img", recipe.kernel_args, recipe.grub_timeout)
    return grub, syslinux


def build_disk(tree: Path, recipe: GuestRecipe, work: Path, runner: Runner) -> dict:
    """The guest disk from the root tree: ESP + ext4 root in a sparse raw image, then a compressed qcow2."""
    kernel, initrd = base.kernel_files(tree)
    esp, raw = work / "esp.img", work / "disk.raw"
    grub, syslinux = boot_menus(recipe)
    files = {"vmlinuz": kernel, "initrd.img": initrd}
    media.esp_image(esp, files, recipe.volume_label, grub, syslinux, work, runner, mib=recipe.esp_mib)
    media.gpt_disk(raw, partitions(recipe, esp), runner)
    esp.unlink()
    runner.run(mkfs_argv(tree, raw, recipe))
    runner.run(["qemu-img", "convert", "-c", "-O", "qcow2", raw, work / QCOW2])
    raw.unlink()
    return {"kernel": kernel.name.removeprefix("vmlinuz-")}


def build_guest(
    out: Path = DEFAULT_OUT,
    progress: Progress = print,
    *,
    cache_root: Path | None = None,
    recipe: GuestRecipe | None = None,
) -> GuestArtifacts:
    """Build (or reuse from the cache) the test guest disk and put it and its manifest in `out`. Raises
    `BuildError`."""
    recipe = recipe or GuestRecipe()
    out = Path(out).resolve()
    cache = Cache(cache_root)
    k = keys(recipe)
    check_host([])
    with cache.lock():
        st = Stages(cache, progress, total=STAGES)
        disk_entry = cache.entry("guest", k["guest"])
        if cache.lookup("guest", k["guest"]) is not None:
            progress(f"[{STAGES}/{STAGES}] {DISK_STAGE}: cached ({k['guest'][:12]}), copying to {out}")
            publish(disk_entry, out, ARTIFACTS)
            progress(f"cached: guest {k['guest'][:12]} in {out} ({time.monotonic() - st.start:.1f} s)")
            return _artifacts(out, k["guest"], cached=True)

        check_host(list(HOST_TOOLS), HOST_TOOLS)

        def make_rootfs(work: Path, runner: Runner) -> dict:
            staged = work / "overlay"
            files = stage_overlay(recipe, staged)
            facts = base.build(recipe, work, runner, customize=GUEST_CUSTOMIZE_SCRIPT, overlay=staged)
            shutil.rmtree(staged)
            return {**facts, "overlay_files": files}

        rootfs_entry = st.layer(
            1,
            "guest-base",
            ROOTFS_STAGE,
            k["guest-base"],
            f"mmdebstrap {recipe.suite} with {len(recipe.packages)} packages (about 1-2 min)",
            make_rootfs,
        )

        def make_disk(work: Path, runner: Runner) -> dict:
            t0 = time.monotonic()
            facts = build_disk(rootfs_entry / "root", recipe, work, runner)
            st.seconds["guest"] = time.monotonic() - t0
            _write_manifest(work, recipe, k, rootfs_entry, st.seconds, facts["kernel"])
            return facts

        st.layer(2, "guest", DISK_STAGE, k["guest"], f"ESP + ext4 root ({recipe.disk_mib} MiB) → qcow2", make_disk)
        publish(disk_entry, out, ARTIFACTS)
        for kind in ("guest", "guest-base"):
            cache.prune(kind, {k[kind]})
        progress(f"built: guest {k['guest'][:12]} in {out} ({time.monotonic() - st.start:.1f} s)")
        return _artifacts(out, k["guest"], cached=False)


def qcow2_info(path: Path, runner: Runner) -> dict:
    return json.loads(runner.output(["qemu-img", "info", "--output=json", path]))


def _write_manifest(
    work: Path, recipe: GuestRecipe, keys: dict[str, str], rootfs_entry: Path, seconds: dict[str, float], kernel: str
) -> None:
    status = (rootfs_entry / "root/var/lib/dpkg/status").read_text()
    qcow2 = work / QCOW2
    info = qcow2_info(qcow2, Runner(DISK_STAGE, work / "build.log"))
    artifacts = {
        QCOW2: {
            "size": qcow2.stat().st_size,
            "virtual_size": info["virtual-size"],
            "format": info["format"],
            "sha256": manifest.sha256_file(qcow2),
        }
    }
    text = manifest.document(
        recipe=manifest.guest_recipe(recipe),
        inputs=keys,
        key=keys["guest"],
        packages=manifest.parse_dpkg_status(status),
        artifacts=artifacts,
        stage_seconds={"guest-base": seconds.get("guest-base", 0.0), "guest": seconds.get("guest", 0.0)},
        kernel=kernel,
        built_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    (work / MANIFEST).write_text(text)


def _artifacts(out: Path, key: str, cached: bool) -> GuestArtifacts:
    return GuestArtifacts(qcow2=out / QCOW2, manifest=out / MANIFEST, key=key, cached=cached)
