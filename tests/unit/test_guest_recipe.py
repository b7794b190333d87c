"""The test guest's recipe and the pure parts of its build and boot: package list, cache keys, disk layout, boot
menus, the files synced into its root, its manifest, the QEMU command line and the NoCloud seed."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pvc.image import base, guest, inputs, manifest, media
from pvc.image.main import cli
from pvc.image.recipe import GUEST_CUSTOMIZE_SCRIPT, GUEST_ROOTFS_OVERLAY, HERE, GuestRecipe, Recipe
from tests.harness import guest as guestboot

RECIPE = GuestRecipe()
SCRIPT = GUEST_CUSTOMIZE_SCRIPT.read_bytes()
OVERLAY_HASH = inputs.hash_files(HERE, guest.overlay_sources(RECIPE))


def test_packages_are_a_small_cloud_guest():
    pkgs = set(RECIPE.packages)
    for pkg in ("linux-image-cloud-amd64", "systemd-sysv", "systemd-resolved", "cloud-init", "qemu-guest-agent"):
        assert pkg in pkgs
    for pkg in ("openssh-server", "iputils-ping", "netcat-openbsd", "curl"):
        assert pkg in pkgs
    assert "linux-image-amd64" not in pkgs  # the cloud flavour only
    assert not pkgs & set(Recipe().packages) - {
        "systemd-sysv",
        "openssh-server",
        "iproute2",
        "iputils-ping",
        "ca-certificates",
    }, "node-only packages in the guest"
    # the guest shares the node's Debian sources and suites
    assert RECIPE.sources() == Recipe().sources()


def test_rootfs_key_follows_its_inputs():
    key = inputs.guest_base_key(RECIPE, SCRIPT, OVERLAY_HASH)
    assert inputs.guest_base_key(GuestRecipe(), SCRIPT, OVERLAY_HASH) == key
    assert (
        inputs.guest_base_key(replace(RECIPE, packages=tuple(reversed(RECIPE.packages))), SCRIPT, OVERLAY_HASH) == key
    )
    assert inputs.guest_base_key(replace(RECIPE, packages=(*RECIPE.packages, "htop")), SCRIPT, OVERLAY_HASH) != key
    assert inputs.guest_base_key(replace(RECIPE, packages=RECIPE.packages[1:]), SCRIPT, OVERLAY_HASH) != key
    assert inputs.guest_base_key(replace(RECIPE, suite="trixie"), SCRIPT, OVERLAY_HASH) != key
    assert inputs.guest_base_key(replace(RECIPE, hook_dirs=()), SCRIPT, OVERLAY_HASH) != key
    assert inputs.guest_base_key(RECIPE, SCRIPT + b"\n# changed\n", OVERLAY_HASH) != key
    assert inputs.guest_base_key(RECIPE, SCRIPT, "other-overlay") != key
    assert (
        inputs.guest_base_key(
            replace(RECIPE, root_partuuid="0" * 8 + "-0000-0000-0000-" + "0" * 12), SCRIPT, OVERLAY_HASH
        )
        != key
    )
    # disk-only settings leave the root tree alone
    assert inputs.guest_base_key(replace(RECIPE, disk_mib=4096, esp_mib=96), SCRIPT, OVERLAY_HASH) == key
    # and the guest's tree never shares a key with the node's base tree
    assert key != inputs.base_key(RECIPE, SCRIPT)


def test_disk_key_follows_the_tree_and_the_disk_settings():
    key = inputs.guest_disk_key("tree", RECIPE)
    assert inputs.guest_disk_key("tree", GuestRecipe()) == key
    assert inputs.guest_disk_key("other-tree", RECIPE) != key
    assert inputs.guest_disk_key("tree", replace(RECIPE, disk_mib=4096)) != key
    assert inputs.guest_disk_key("tree", replace(RECIPE, esp_mib=96)) != key
    assert inputs.guest_disk_key("tree", replace(RECIPE, console_args="console=ttyS0")) != key
    assert inputs.guest_disk_key("tree", replace(RECIPE, volume_label="OTHER")) != key


def test_keys_change_when_an_overlay_file_changes(tmp_path):
    copy = tmp_path / "image"
    for rel in guest.overlay_sources(RECIPE):
        src = HERE / rel
        if src.is_dir():
            shutil.copytree(src, copy / rel)
        else:
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy / rel)
    assert inputs.hash_files(copy, guest.overlay_sources(RECIPE)) == OVERLAY_HASH
    network = copy / GUEST_ROOTFS_OVERLAY.name / "etc/systemd/network/99-pvc-dhcp.network"
    network.write_text(network.read_text() + "\n# changed\n")
    assert inputs.hash_files(copy, guest.overlay_sources(RECIPE)) != OVERLAY_HASH
    keys = guest.keys(RECIPE)
    assert keys["guest-base"] == inputs.guest_base_key(RECIPE, SCRIPT, OVERLAY_HASH)
    assert keys["guest"] == inputs.guest_disk_key(keys["guest-base"], RECIPE)


def test_mmdebstrap_argv_syncs_the_overlay_before_the_packages():
    argv = base.mmdebstrap_argv(RECIPE, GUEST_CUSTOMIZE_SCRIPT, Path("/tmp/root"), Path("/tmp/overlay"))
    assert argv[:3] == ["mmdebstrap", "--mode=root", "--variant=minbase"]
    include = next(a for a in argv if a.startswith("--include=")).removeprefix("--include=").split(",")
    assert include == list(RECIPE.packages)
    assert "--essential-hook=sync-in /tmp/overlay /" in argv
    assert "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr" in argv
    assert f'--customize-hook=chroot "$1" sh /tmp/pvc-image/{GUEST_CUSTOMIZE_SCRIPT.name}' in argv
    assert argv[-3:] == RECIPE.sources()
    # the node image's command line has neither
    node = base.mmdebstrap_argv(Recipe(), GUEST_CUSTOMIZE_SCRIPT, Path("/tmp/root"))
    assert not any(a.startswith(("--essential-hook", "--hook-dir")) for a in node)


def test_disk_layout():
    parts = guest.partitions(RECIPE)
    esp, root = parts
    assert (esp.type, esp.name, esp.legacy_boot, esp.mib) == ("EF00", "PVCGUEST", True, RECIPE.esp_mib)
    assert (root.type, root.uuid, root.legacy_boot) == ("8304", RECIPE.root_partuuid, False)
    assert media.disk_mib(parts) == RECIPE.disk_mib
    assert media.partition_offsets(parts) == [1, 1 + RECIPE.esp_mib]
    argv = media.sgdisk_argv(Path("/d.raw"), parts)
    assert argv[:2] == ["sgdisk", "-o"]
    assert "1:2048:" + str(2048 + RECIPE.esp_mib * 2048 - 1) in argv
    assert "2:8304" in argv and f"2:{RECIPE.root_partuuid}" in argv and "1:set:2" in argv
    assert argv[-1] == "/d.raw"
    mkfs = guest.mkfs_argv(Path("/tree"), Path("/d.raw"), RECIPE)
    assert mkfs[:2] == ["mkfs.ext4", "-q"]
    assert mkfs[mkfs.index("-d") + 1] == "/tree"
    assert mkfs[mkfs.index("-E") + 1] == f"offset={(1 + RECIPE.esp_mib) * 2**20}"
    assert mkfs[-2:] == ["/d.raw", f"{root.mib}M"]


def test_boot_menus_find_the_root_by_partuuid_with_the_serial_console_last():
    args = RECIPE.kernel_args.split()
    assert args[:2] == [f"root=PARTUUID={RECIPE.root_partuuid}", "rw"]
    assert args[-1] == "console=ttyS0,115200"
    assert RECIPE.fstab().split()[:3] == [f"PARTUUID={RECIPE.root_partuuid}", "/", "ext4"]
    grub, syslinux = guest.boot_menus(RECIPE)
    assert f"linux /vmlinuz {RECIPE.kernel_args}\n" in grub and "initrd /initrd.img\n" in grub
    assert "set timeout=0\n" in grub
    lines = [line.strip() for line in syslinux.splitlines()]
    assert "LINUX /vmlinuz" in lines and "INITRD /initrd.img" in lines
    assert f"APPEND {RECIPE.kernel_args}" in lines
    assert "PROMPT 0" in lines
    assert media.grub_search_cfg(RECIPE.volume_label).startswith("search --no-floppy --label PVCGUEST ")


def test_staged_overlay(tmp_path):
    dest = tmp_path / "overlay"
    files = guest.stage_overlay(RECIPE, dest)
    assert "/etc/fstab" in files and (dest / "etc/fstab").read_text() == RECIPE.fstab()
    for rel in RECIPE.shared_files:
        assert f"/{rel}" in files
        assert (dest / rel).read_bytes() == (HERE / "rootfs" / rel).read_bytes()
    assert "/etc/cloud/cloud.cfg.d/99-pvc-guest.cfg" in files
    for path in dest.rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path


def _overlay(rel: str) -> str:
    return (GUEST_ROOTFS_OVERLAY / rel).read_text()


def test_root_logs_in_by_key_only():
    """The seed's keys go to root (no default user), so the guest's sshd lets root in by key, where a node's refuses
    root: the guest has its own drop-in, not the node's."""
    conf = _overlay("etc/ssh/sshd_config.d/pvc.conf").splitlines()
    assert "PermitRootLogin prohibit-password" in conf and "PasswordAuthentication no" in conf
    assert "etc/ssh/sshd_config.d/pvc.conf" not in RECIPE.shared_files
    assert "PermitRootLogin no" in (HERE / "rootfs/etc/ssh/sshd_config.d/pvc.conf").read_text().splitlines()


def test_cloud_init_settings():
    cfg = yaml.safe_load(_overlay("etc/cloud/cloud.cfg.d/99-pvc-guest.cfg"))
    assert cfg["datasource_list"] == ["NoCloud", "Ec2", "None"]
    # ds-identify parses datasource_list line by line: it must stay on one line
    assert "datasource_list: [NoCloud, Ec2, None]\n" in _overlay("etc/cloud/cloud.cfg.d/99-pvc-guest.cfg")
    assert cfg["disable_root"] is False and cfg["system_info"]["default_user"] is None
    assert "users" not in cfg  # `users: []` fails cloud-init's schema
    assert cfg["ssh_genkeytypes"] == ["ed25519"]
    assert cfg["system_info"]["network"]["renderers"] == ["networkd"]
    for module in ("growpart", "set_hostname", "users-groups", "ssh"):
        assert module in cfg["cloud_init_modules"]
    assert "runcmd" in cfg["cloud_config_modules"] and "scripts-user" in cfg["cloud_final_modules"]
    assert "locale" not in cfg["cloud_config_modules"]  # slow, and the guest has no locales to set
    # Ec2's strict_id is read by ds-identify only from a file with "ec2" in its name
    name = "99-pvc-guest-ec2.cfg"
    assert "ec2" in name.lower()
    ec2 = yaml.safe_load(_overlay(f"etc/cloud/cloud.cfg.d/{name}"))["datasource"]["Ec2"]
    assert ec2["strict_id"] is False and ec2["max_wait"] <= 30
    policy = _overlay("etc/cloud/ds-identify.cfg")
    assert "policy: search,found=all,maybe=all,notfound=disabled" in policy


def _unit(rel: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keep keys case-sensitive (configparser's documented way)
    unit.read(GUEST_ROOTFS_OVERLAY / rel)
    return unit


def test_dhcp_on_every_nic_and_wait_online_never_blocks_long():
    network = _unit("etc/systemd/network/99-pvc-dhcp.network")
    assert set(network["Match"]["Name"].split()) == {"en*", "eth*"}
    assert network["Network"]["DHCP"] == "yes"
    # cloud-init's own files (10-cloud-init-<nic>.network) must sort before this catch-all
    assert "10-cloud-init-ens3.network" < "99-pvc-dhcp.network"
    wait = _unit("usr/lib/systemd/system/systemd-networkd-wait-online.service.d/pvc-guest.conf")
    start = wait["Service"]["ExecStart"]
    assert "--any" in start and "--timeout=20" in start
    modules = _overlay("usr/share/initramfs-tools/modules.d/pvc-guest").split()
    assert {"virtio_pci", "virtio_blk", "virtio_scsi"} <= set(modules)
    assert "MODULES=list" in _overlay("etc/initramfs-tools/conf.d/pvc-guest.conf")


# cloud-init's networkd renderer, as it writes its fallback (DHCP on the first NIC) and a seed's choice
CLOUD_INIT_FALLBACK = "[Match]\nMACAddress=52:54:00:12:34:56\nName=ens3\n\n[Network]\nDHCP=ipv4\n"
SEED_NO_DOMAINS = "[Match]\nName=ens4\n\n[Network]\nDHCP=ipv4\n\n[DHCPv4]\nUseDomains=no\n"
SEED_STATIC = "[Match]\nName=ens5\n\n[Network]\nAddress=10.0.0.5/24\nDHCP=no\n"


def test_every_nic_takes_the_dhcp_search_domain(tmp_path):
    """The catch-all file for NICs cloud-init leaves alone, and a drop-in (by dhcp-domains, run between cloud-init's
    local stage and networkd) for the NICs it configures for DHCP, so `ping vm2` works by short name on the first
    NIC too; a seed that chooses UseDomains itself, or a static NIC, is left as it is."""
    assert _unit("etc/systemd/network/99-pvc-dhcp.network")["DHCPv4"]["UseDomains"] == "yes"
    for name, text in (("ens3", CLOUD_INIT_FALLBACK), ("ens4", SEED_NO_DOMAINS), ("ens5", SEED_STATIC)):
        (tmp_path / f"10-cloud-init-{name}.network").write_text(text)
    script = GUEST_ROOTFS_OVERLAY / "usr/lib/pvc-guest/dhcp-domains"
    for _ in range(2):  # every boot: the second run changes nothing
        subprocess.run(["sh", str(script), str(tmp_path)], check=True)
    dropin = configparser.ConfigParser()
    dropin.read(tmp_path / "10-cloud-init-ens3.network.d/pvc-dhcp-domains.conf")
    assert dropin["DHCPv4"]["UseDomains"] == "yes"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "10-cloud-init-ens3.network",
        "10-cloud-init-ens3.network.d",
        "10-cloud-init-ens4.network",
        "10-cloud-init-ens5.network",
    ]
    subprocess.run(["sh", str(script), str(tmp_path / "empty")], check=True)  # no cloud-init files: nothing to do
    service = _unit("usr/lib/systemd/system/pvc-dhcp-domains.service")
    assert service["Service"]["ExecStart"] == "/bin/sh /usr/lib/pvc-guest/dhcp-domains"  # overlay files are 0644
    assert "cloud-init-local.service" in service["Unit"]["After"].split()
    assert {"network-pre.target", "systemd-networkd.service"} <= set(service["Unit"]["Before"].split())
    assert service["Install"]["WantedBy"] == "systemd-networkd.service"
    assert "pvc-dhcp-domains.service" in SCRIPT.decode()  # enabled by the customize script


def test_guest_manifest():
    text = manifest.document(
        recipe=manifest.guest_recipe(RECIPE),
        inputs={"guest-base": "b", "guest": "g"},
        key="g",
        packages={"cloud-init": "22.4.2-1+deb12u4"},
        artifacts={"pvc-guest.qcow2": {"size": 1, "virtual_size": 2, "sha256": "0" * 64}},
        stage_seconds={"guest-base": 90.04, "guest": 20.0},
        kernel="6.1.0-57-cloud-amd64",
        built_at="2026-01-01T00:00:00+00:00",
    )
    doc = json.loads(text)
    assert doc["inputs_sha256"] == "g"
    assert doc["stage_keys"] == {"guest-base": "b", "guest": "g"}
    assert doc["packages"] == {"cloud-init": "22.4.2-1+deb12u4"}
    assert doc["recipe"]["kernel_args"] == RECIPE.kernel_args
    assert doc["recipe"]["requested_packages"] == list(RECIPE.packages)
    assert doc["build_seconds"] == {"guest-base": 90.0, "guest": 20.0}
    assert "python_packages" not in doc


def test_qemu_argv(tmp_path):
    spec = guestboot.GuestSpec(disk=tmp_path / "d.qcow2", workdir=tmp_path, seed=tmp_path / "s.iso", ssh_port=2222)
    argv = guestboot.qemu_argv(replace(spec, accel="tcg"))
    assert argv[argv.index("-machine") + 1] == "pc"
    assert "if=pflash" not in " ".join(argv)
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives[0].startswith(f"file={tmp_path / 'd.qcow2'},if=virtio,format=qcow2")
    assert drives[1].startswith(f"file={tmp_path / 's.iso'},if=virtio,format=raw,readonly=on")
    assert "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22" in argv
    assert "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0" in argv
    assert argv[argv.index("-accel") + 1].startswith("tcg")
    uefi = guestboot.qemu_argv(replace(spec, firmware="uefi", accel="tcg"))
    assert uefi[uefi.index("-machine") + 1] == "q35"
    assert any(a.startswith("if=pflash,format=raw,readonly=on,file=") for a in uefi)
    with pytest.raises(guestboot.GuestError, match="firmware must be one of bios, uefi"):
        guestboot.qemu_argv(replace(spec, firmware="coreboot"))


def test_seed_iso_is_a_cidata_volume(tmp_path):
    meta = guestboot.meta_data("i-123", "web1")
    assert yaml.safe_load(meta) == {"instance-id": "i-123", "local-hostname": "web1"}
    iso = guestboot.seed_iso(tmp_path / "seed.iso", {"meta-data": meta, "user-data": "#cloud-config\n{}\n"})
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(iso)], capture_output=True, text=True)
    assert label.stdout.strip() == "cidata"
    out = tmp_path / "out"
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(out)], check=True, capture_output=True
    )
    assert (out / "meta-data").read_text() == meta
    assert (out / "user-data").read_text() == "#cloud-config\n{}\n"


def test_cli_guest_reports_a_failure_in_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("PVC_IMAGE_CACHE", str(blocker / "cache"))
    res = CliRunner().invoke(cli, ["guest", "--out", str(tmp_path / "out")])
    assert res.exit_code == 1
    assert res.output.startswith("pvc-image: ") and str(blocker / "cache") in res.output
    assert "Traceback" not in res.output
    assert CliRunner().invoke(cli, ["guest", "--help"]).exit_code == 0
