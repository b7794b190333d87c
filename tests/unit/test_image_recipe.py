"""The pure parts of the image builder: cache keys, manifest, boot configs, command lines, the CLI's refusals."""

from __future__ import annotations

import configparser
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from pvc.image import base, inputs, manifest, media, squashfs
from pvc.image.main import cli
from pvc.image.recipe import CUSTOMIZE_SCRIPT, ROOTFS_OVERLAY, Recipe
from pvc.image.run import BuildError, Runner

RECIPE = Recipe()


def _tree(root: Path) -> Path:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("A = 1\n")
    (root / "pkg" / "sub" / "b.py").write_text("B = 2\n")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\ndependencies = ['click>=8']\n")
    return root


def test_source_hash_changes_with_content_names_and_mode_only(tmp_path):
    root = _tree(tmp_path)
    entries = ("pkg", "pyproject.toml")
    first = inputs.hash_files(root, entries)
    assert inputs.hash_files(root, entries) == first
    # build debris is not an input
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (root / "pkg" / "x.egg-info").mkdir()
    (root / "pkg" / "x.egg-info" / "PKG-INFO").write_text("x")
    assert inputs.hash_files(root, entries) == first
    # content
    (root / "pkg" / "a.py").write_text("A = 2\n")
    changed = inputs.hash_files(root, entries)
    assert changed != first
    (root / "pkg" / "a.py").write_text("A = 1\n")
    assert inputs.hash_files(root, entries) == first
    # a rename with the same content
    (root / "pkg" / "sub" / "b.py").rename(root / "pkg" / "sub" / "c.py")
    assert inputs.hash_files(root, entries) != first
    (root / "pkg" / "sub" / "c.py").rename(root / "pkg" / "sub" / "b.py")
    # the executable bit
    (root / "pkg" / "a.py").chmod(0o755)
    assert inputs.hash_files(root, entries) != first


def test_base_key_follows_packages_suites_and_customize():
    script = CUSTOMIZE_SCRIPT.read_bytes()
    key = inputs.base_key(RECIPE, script)
    assert inputs.base_key(Recipe(), script) == key
    assert inputs.base_key(replace(RECIPE, packages=tuple(reversed(RECIPE.packages))), script) == key
    assert inputs.base_key(replace(RECIPE, packages=(*RECIPE.packages, "htop")), script) != key
    assert inputs.base_key(replace(RECIPE, packages=RECIPE.packages[1:]), script) != key
    assert inputs.base_key(replace(RECIPE, suite="trixie"), script) != key
    assert inputs.base_key(replace(RECIPE, mirror="http://mirror.example/debian"), script) != key
    assert inputs.base_key(RECIPE, script + b"\n# changed\n") != key
    # settings that only later stages use leave the base alone
    assert inputs.base_key(replace(RECIPE, compression="xz", kernel_args="quiet"), script) == key


def test_layer_keys_chain():
    deps = ["pydantic>=2.5,<3", "click>=8.1,<9"]
    d = inputs.pydeps_key("b1", deps, "/opt/pvc")
    assert inputs.pydeps_key("b1", list(reversed(deps)), "/opt/pvc") == d
    assert inputs.pydeps_key("b2", deps, "/opt/pvc") != d
    assert inputs.pydeps_key("b1", [*deps, "rich"], "/opt/pvc") != d
    p = inputs.project_key(d, "src1", RECIPE)
    assert inputs.project_key(d, "src2", RECIPE) != p
    assert inputs.project_key("other", "src1", RECIPE) != p
    i = inputs.image_key(p, RECIPE)
    assert inputs.image_key(p, replace(RECIPE, compression="xz")) != i
    assert inputs.image_key(p, replace(RECIPE, kernel_args=RECIPE.kernel_args + " quiet")) != i
    assert inputs.image_key("other", RECIPE) != i


def test_project_dependencies_read_from_pyproject(tmp_path):
    assert inputs.project_dependencies(_tree(tmp_path)) == ["click>=8"]
    real = inputs.project_dependencies(Path(__file__).resolve().parents[2])
    assert any(d.startswith("pydantic") for d in real)


STATUS = """\
Package: zookeeper
Status: install ok installed
Priority: optional
Version: 3.8.0-11
Description: centralized coordination service
 multi-line description: with a colon

Package: removed-thing
Status: deinstall ok config-files
Version: 1.0

Package: libc6
Status: install ok installed
Multi-Arch: same
Version: 2.36-9+deb12u9

Package: broken
Status: install reinstreq half-installed
Version: 0.1
"""


def test_parse_dpkg_status_keeps_installed_packages_only():
    assert manifest.parse_dpkg_status(STATUS) == {"libc6": "2.36-9+deb12u9", "zookeeper": "3.8.0-11"}


def test_python_packages_from_dist_info(tmp_path):
    site = tmp_path / "site-packages"
    (site / "pydantic_core-2.14.6.dist-info").mkdir(parents=True)
    (site / "pvc-0.1.0.dist-info").mkdir()
    (site / "pydantic_core").mkdir()
    assert manifest.python_packages([site, tmp_path / "absent"]) == {"pvc": "0.1.0", "pydantic-core": "2.14.6"}


def test_manifest_render(tmp_path):
    art = tmp_path / "vmlinuz"
    art.write_bytes(b"kernel")
    text = manifest.render(
        recipe=RECIPE,
        inputs={"base": "b", "pydeps": "d", "project": "p", "image": "i"},
        packages={"zookeeper": "3.8.0-11"},
        python={"pvc": "0.1.0"},
        artifacts={"vmlinuz": {"size": 6, "sha256": manifest.sha256_file(art)}},
        stage_seconds={"base": 120.04, "squashfs": 8.0},
        kernel="6.1.0-28-amd64",
        built_at="2026-01-01T00:00:00+00:00",
    )
    doc = json.loads(text)
    assert doc["inputs_sha256"] == "i"
    assert doc["stage_keys"]["base"] == "b"
    assert doc["packages"] == {"zookeeper": "3.8.0-11"}
    assert doc["python_packages"] == {"pvc": "0.1.0"}
    assert doc["artifacts"]["vmlinuz"] == {"size": 6, "sha256": hashlib.sha256(b"kernel").hexdigest()}
    assert doc["build_seconds"] == {"base": 120.0, "squashfs": 8.0}
    assert doc["recipe"]["suites"] == ["bookworm", "bookworm-updates", "bookworm-security"]
    assert doc["recipe"]["kernel_args"] == RECIPE.kernel_args


def test_kernel_args_boot_live_with_serial_console():
    args = RECIPE.kernel_args.split()
    assert args[0] == "boot=live"
    assert "console=ttyS0,115200" in args and "console=tty0" in args
    assert not any(a.startswith("pvc.") for a in args)


def test_grub_cfg():
    cfg = media.grub_cfg(RECIPE)
    assert "set timeout=1\n" in cfg
    assert f"linux /live/vmlinuz {RECIPE.kernel_args}\n" in cfg
    assert "initrd /live/initrd.img\n" in cfg
    assert "serial --unit=0 --speed=115200" in cfg
    assert cfg.count("{") == cfg.count("}") == 1
    embed = media.grub_embed_cfg(RECIPE)
    assert "--label PVCBOOT" in embed and "configfile ($root)/boot/grub/grub.cfg" in embed


def test_syslinux_cfg():
    cfg = media.syslinux_cfg(RECIPE)
    lines = [line.strip() for line in cfg.splitlines()]
    assert "SERIAL 0 115200" in lines
    assert "DEFAULT pvc" in lines
    assert "LINUX /live/vmlinuz" in lines and "INITRD /live/initrd.img" in lines
    assert f"APPEND {RECIPE.kernel_args}" in lines
    assert "TIMEOUT 10" in lines  # tenths of a second


def test_ipxe_script():
    script = media.ipxe_script(RECIPE)
    assert script.startswith("#!ipxe\n")
    kernel = next(line for line in script.splitlines() if line.startswith("kernel "))
    words = kernel.split()
    assert words[1] == "${base}/vmlinuz"
    assert "boot=live" in words and "fetch=${base}/filesystem.squashfs" in words
    assert "console=ttyS0,115200" in words
    assert words[-1] == "${pvc_args}"
    assert "initrd ${base}/initrd.img" in script.splitlines()
    assert "isset ${base} || set base http://${next-server}/pvc" in script
    assert script.rstrip().endswith("boot")


def test_mmdebstrap_argv():
    argv = base.mmdebstrap_argv(RECIPE, CUSTOMIZE_SCRIPT, Path("/tmp/root"))
    assert argv[:3] == ["mmdebstrap", "--mode=root", "--variant=minbase"]
    include = next(a for a in argv if a.startswith("--include=")).removeprefix("--include=").split(",")
    for pkg in ("linux-image-amd64", "systemd-sysv", "live-boot", "zookeeper", "ceph-mon", "patroni", "frr"):
        assert pkg in include
    assert '--aptopt=APT::Install-Recommends "false"' in argv
    assert "--dpkgopt=path-exclude=/usr/share/man/*" in argv
    assert argv[-3:] == RECIPE.sources()
    assert [s.split()[2] for s in argv[-3:]] == ["bookworm", "bookworm-updates", "bookworm-security"]


def test_squashfs_compression():
    argv = squashfs.mksquashfs_argv(Path("/src"), Path("/fs.sqfs"), RECIPE)
    assert argv[3:7] == ["-comp", "zstd", "-Xcompression-level", "3"]
    assert "boot/initrd.img*" in argv
    assert squashfs.mksquashfs_argv(Path("/s"), Path("/d"), replace(RECIPE, compression="xz"))[3:5] == ["-comp", "xz"]
    with pytest.raises(ValueError, match="zstd"):
        replace(RECIPE, compression="lz4").squashfs_options()


def test_compression_other_than_zstd_or_xz_is_a_usage_error():
    res = CliRunner().invoke(cli, ["build", "--compression", "lz4"])
    assert res.exit_code == 2
    assert "Invalid value for '--compression'" in res.output


def test_runner_failure_names_stage_command_and_log_tail(tmp_path):
    runner = Runner("media", tmp_path / "build.log")
    with pytest.raises(BuildError) as err:
        runner.run(["sh", "-c", "echo preparing; echo no space left on device >&2; exit 3"])
    assert err.value.stage == "media"
    assert "exit 3" in err.value.message and "sh -c" in err.value.message
    assert "no space left on device" in err.value.log_tail
    with pytest.raises(BuildError, match="missing tool 'no-such-tool-pvc'"):
        runner.run(["no-such-tool-pvc", "--version"])


def test_pvc_node_unit():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # configparser's documented way to keep key case
    unit.read(ROOTFS_OVERLAY / "usr/lib/systemd/system/pvc-node.service")
    svc = unit["Service"]
    assert svc["ExecStart"] == "/usr/local/bin/pvc-node boot"
    assert svc["Type"] == "exec"
    assert svc["Restart"] == "on-failure" and svc["RestartSec"] == "5"
    assert svc["StandardOutput"] == svc["StandardError"] == "journal+console"
    assert set(unit["Unit"]["After"].split()) == {"network-pre.target", "systemd-udevd.service", "local-fs.target"}
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert RECIPE.enable_units == ("pvc-node.service",)


def test_ssh_generates_only_an_ed25519_host_key():
    dropin = (ROOTFS_OVERLAY / "usr/lib/systemd/system/ssh.service.d/pvc-hostkey.conf").read_text()
    assert "-t ed25519" in dropin and "ssh-keygen -A" not in dropin
    assert "HostKey /etc/ssh/ssh_host_ed25519_key" in (ROOTFS_OVERLAY / "etc/ssh/sshd_config.d/pvc.conf").read_text()
