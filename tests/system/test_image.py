"""The built node image: artefacts, manifest, the root's contents, the project running inside it, and (slow) a
UEFI boot of the USB image under QEMU."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


@pytest.fixture(scope="module")
def root(image) -> Iterator[Path]:
    """The image's filesystem.squashfs mounted read-only."""
    mnt = Path(tempfile.mkdtemp(prefix="pvc-image-root-"))
    subprocess.run(["mount", "-o", "loop,ro", "-t", "squashfs", str(image.squashfs), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        mnt.rmdir()


def test_every_artifact_exists(image):
    for path in image.paths():
        assert path.is_file() and path.stat().st_size > 0, path
    assert image.squashfs.stat().st_size > 300 * 2**20
    assert image.usb.stat().st_size > image.squashfs.stat().st_size
    with image.usb.open("rb") as fh:
        head = fh.read(1024)
    assert head[510:512] == b"\x55\xaa"  # protective MBR (syslinux gptmbr)
    assert head[512:520] == b"EFI PART"  # GPT header
    assert "${base}/vmlinuz" in image.ipxe.read_text()


def test_manifest_lists_packages_and_artifacts(image):
    doc = json.loads(image.manifest.read_text())
    for pkg in ("linux-image-amd64", "zookeeper", "ceph-mon", "patroni", "frr", "live-boot", "postgresql"):
        assert re.match(r"^\d", doc["packages"].get(pkg, "")), f"{pkg} missing or without a version"
    assert len(doc["packages"]) > 300
    assert doc["inputs_sha256"] == image.key
    assert {"pydantic", "gunicorn", "pyroute2", "pvc"} <= set(doc["python_packages"])
    for name in ("filesystem.squashfs", "vmlinuz", "initrd.img", "pvc-usb.img", "pvc.iso", "boot.ipxe"):
        art = doc["artifacts"][name]
        assert art["size"] == (image.manifest.parent / name).stat().st_size
        assert re.fullmatch(r"[0-9a-f]{64}", art["sha256"])
    assert {"base", "pydeps", "project", "squashfs", "media"} <= set(doc["build_seconds"])


def _enabled(root: Path) -> set[str]:
    """Every unit linked into a .wants/.requires folder of /etc/systemd/system."""
    etc = root / "etc/systemd/system"
    return {p.name for p in etc.glob("*.wants/*")} | {p.name for p in etc.glob("*.requires/*")}


def test_root_has_the_project_and_its_unit(root):
    assert (root / "opt/pvc/bin/pvc-node").is_file()
    for cmd in ("pvc", "pvcd", "pvc-node"):
        assert os.readlink(root / "usr/local/bin" / cmd) == f"/opt/pvc/bin/{cmd}"
    wants = root / "etc/systemd/system/multi-user.target.wants/pvc-node.service"
    assert wants.is_symlink()
    assert "ExecStart=/usr/local/bin/pvc-node boot" in (root / "usr/lib/systemd/system/pvc-node.service").read_text()


def test_root_identity_is_scrubbed(root):
    assert not list((root / "etc/ssh").glob("ssh_host_*"))
    assert (root / "etc/machine-id").read_text() == ""
    assert (root / "etc/resolv.conf").read_text() == ""
    assert not (root / "var/log/journal").exists()
    assert not (root / "root/.ssh").exists()
    shadow = {line.split(":")[0]: line.split(":")[1] for line in (root / "etc/shadow").read_text().splitlines()}
    assert shadow["root"].startswith("!"), "root's password is not locked"


def test_only_the_node_services_are_enabled(root):
    enabled = _enabled(root)
    for unit in ("pvc-node.service", "ssh.service", "systemd-networkd.service", "chrony.service"):
        assert unit in enabled, unit
    for unit in enabled:
        assert not re.match(
            r"(postgresql|patroni|libvirtd|libvirt-guests|virtlogd|virtlockd|zookeeper|frr|dnsmasq|ceph|smartd"
            r"|smartmontools|rbdmap|nvmf|nvmefc|apt-daily|dpkg-db-backup|fstrim|e2scrub)",
            unit,
        ), f"{unit} is enabled in the image"
    network = root / "etc/systemd/network"
    assert not list(network.glob("*.network")) if network.is_dir() else True


def test_project_runs_inside_the_root(root):
    if shutil.which("systemd-nspawn") is None:
        pytest.fail("systemd-nspawn is missing (package systemd-container, ci/setup.sh)")
    nspawn = ["systemd-nspawn", f"--directory={root}", "--volatile=overlay", "--register=no", "--keep-unit", "--pipe"]
    nspawn += ["--quiet"]
    res = subprocess.run([*nspawn, "/opt/pvc/bin/pvc", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Usage" in res.stdout
    code = "import pvc.nodeos, pvc.api, pydantic, rados, rbd, libvirt, psycopg2; print(pydantic.VERSION)"
    res = subprocess.run([*nspawn, "/opt/pvc/bin/python", "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().startswith("2.")


@pytest.mark.skipif(not OVMF_CODE.exists(), reason="no OVMF firmware (package ovmf)")
def test_usb_image_boots_uefi_to_pvc_node(image, tmp_path):
    """SLOW BOOT TEST (QEMU TCG, ~1-2 min): the USB image as a USB stick on OVMF boots grub, the kernel and
    live-boot, and systemd starts pvc-node.service — shown on the serial console."""
    vars_fd = tmp_path / "vars.fd"
    shutil.copy(OVMF_VARS, vars_fd)
    log = tmp_path / "serial.log"
    argv = [
        "qemu-system-x86_64",
        *("-accel", "tcg,thread=multi", "-smp", "2", "-m", "2048", "-machine", "q35", "-no-reboot"),
        *("-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
        *("-drive", f"if=pflash,format=raw,file={vars_fd}"),
        *("-device", "qemu-xhci", "-device", "usb-storage,drive=stick,bootindex=0"),
        *("-drive", f"id=stick,if=none,format=raw,readonly=on,file={image.usb}"),
        *("-nic", "none", "-serial", f"file:{log}", "-display", "none", "-monitor", "none"),
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start, seen, text = time.monotonic(), False, ""
    try:
        while time.monotonic() - start < 240 and proc.poll() is None:
            text = log.read_text(errors="replace") if log.exists() else ""
            if re.search(r"(Starting|Started) .*pvc-node\.service|pvc-node\.service - PVC node", text):
                seen = True
                break
            time.sleep(1)
    finally:
        proc.kill()
        proc.wait()
    elapsed = time.monotonic() - start
    print(f"USB image on OVMF: pvc-node.service after {elapsed:.0f} s (TCG)")
    assert seen, f"no pvc-node.service start on the serial console after {elapsed:.0f} s; last lines:\n" + "\n".join(
        text.splitlines()[-25:]
    )
