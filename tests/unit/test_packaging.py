"""The distribution maps every code folder onto the pvc namespace and installs the console scripts."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import ROOT


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
    assert set(scripts) == {"pvc", "pvcd", "pvc-node", "pvc-image", "pvc-install", "pvc-lab"}
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
