"""The distribution maps every code folder onto the pvc namespace and installs the console scripts."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile

import pytest

from tests.harness.examples import ROOT


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_code_folder_is_a_listed_package():
    setup = _pyproject()["tool"]["setuptools"]
    listed = set(setup["packages"])
    mapped = {pkg: folder for pkg, folder in setup["package-dir"].items()}
    for pkg, folder in mapped.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            name = ".".join([pkg, *rel.parts]) if rel.parts else pkg
            assert name in listed, f"{init.parent} holds Python code but {name} is not in [tool.setuptools] packages"
    for folder in ("config-schema", "nodeos", "api", "cli", "image", "installer"):
        assert folder in mapped.values()


def test_packages_import():
    for pkg in _pyproject()["tool"]["setuptools"]["packages"]:
        importlib.import_module(pkg)


def test_console_scripts_are_installed():
    scripts = _pyproject()["project"]["scripts"]
    assert set(scripts) == {"pvc", "pvcd", "pvc-node", "pvc-image", "pvc-install", "pvc-lab", "pvc-lease-hook"}
    assert scripts["pvc-lab"] == "pvc.installer.lab.cli:main"
    bindir = ROOT / ".venv" / "bin" if (ROOT / ".venv").exists() else None
    for name in scripts:
        path = shutil.which(name, path=str(bindir) if bindir else None) or shutil.which(name)
        assert path, f"console script {name} is not installed"


CLUSTER_LIBRARIES = ("falcon", "kazoo", "libvirt", "rados", "rbd")


def _imported_by(argv: list[str], watch: tuple[str, ...]) -> list[str]:
    code = (
        "import sys\n"
        "from pvc.cli.main import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"heavy = [m for m in {watch!r} if m in sys.modules]\n"
        "print('HEAVY:' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return [m for m in out.strip().splitlines()[-1].removeprefix("HEAVY:").split(",") if m]


@pytest.mark.parametrize("argv", [["--help"], ["vm", "--help"], ["vm", "list", "--help"], ["node", "--help"]])
def test_pvc_help_does_not_import_cluster_libraries(argv):
    assert _imported_by(argv, (*CLUSTER_LIBRARIES, "pydantic")) == []


def test_pvc_config_validate_does_not_import_cluster_libraries():
    assert (
        _imported_by(["config", "validate", str(ROOT / "examples" / "production-3node.toml")], CLUSTER_LIBRARIES) == []
    )


LAB_CONFIGS = ["lab-1node.toml", "lab-3node.toml", "lab-vm-1node.toml", "lab-vm-3node.toml"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", str(out), ROOT],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("pvc-*.whl")
    return built


def test_the_wheel_carries_the_lab_configs_once(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n for n in names if n.endswith(".toml")) == [f"pvc/installer/lab/configs/{c}" for c in LAB_CONFIGS]
    assert "pvc/installer/lab/cli.py" in names and "pvc/installer/install.py" in names


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """A non-editable install: the wheel unpacked into a folder of its own, imported with no source tree (run it with
    `python -S` and this environment: no site processing, so this checkout's editable install is not seen; its
    dependencies come from the venv's folder)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-t",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    paths = [str(target), sysconfig.get_paths()["purelib"], "/usr/lib/python3/dist-packages"]
    return target, {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def test_pvc_lab_finds_its_configs_in_an_installed_wheel(installed, tmp_path):
    target, env = installed
    code = (
        "import pvc.installer.lab.state as s\n"
        "from pvc.config.load import load\n"
        "for backend, nodes in (('container', 1), ('container', 3), ('vm', 1), ('vm', 3)):\n"
        "    path = s.example_config(backend, nodes)\n"
        "    assert load(path).valid, path\n"
        "    print(path)\n"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    found = out.stdout.split()
    assert len(found) == 4 and all(p.startswith(str(target / "pvc" / "installer" / "lab" / "configs")) for p in found)


def test_pvc_lab_from_a_wheel_builds_the_image_of_the_checkout_it_runs_in_or_says_what_to_do(installed, tmp_path):
    _, env = installed
    code = (
        "from pvc.installer.lab.command import LabError\n"
        "from pvc.installer.lab.up import image_project\n"
        "try:\n"
        "    print(image_project())\n"
        "except LabError as exc:\n"
        "    print('refused:', exc)\n"
    )
    for cwd, expected in ((ROOT, str(ROOT)), (tmp_path, "refused: no PVC source tree")):
        out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, cwd=cwd)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(expected) and ("--squashfs" in out.stdout) == (cwd == tmp_path), out.stdout
