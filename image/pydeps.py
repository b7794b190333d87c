"""Stage 2, python dependencies: the /opt/pvc venv with the project's PyPI dependencies, as an overlay layer.

The venv is made by the image's own /usr/bin/python3 with --system-site-packages, so python3-rados, -rbd, -libvirt
and -psycopg2 come from Debian; pip fetches the rest (pydantic 2, gunicorn, pyroute2...) from PyPI.
In: the base tree and the dependency list. Out: `<entry>/upper`, the files the stage added.
"""

from __future__ import annotations

from pathlib import Path

from pvc.image.run import Runner, chroot_mounts, network_env, overlay

STAGE = "python deps"

CHROOT_ENV = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/root", "LANG=C.UTF-8"]
PIP_FLAGS = ["--no-cache-dir", "--disable-pip-version-check", "--no-input", "--progress-bar", "off"]


def build(base_root: Path, dependencies: list[str], venv: str, work: Path, runner: Runner) -> dict:
    upper, mnt = work / "upper", work / "mnt"
    with overlay(runner, [base_root], mnt, upper=upper, work=work / "ovl"), chroot_mounts(runner, mnt, network=True):
        chroot: list[str | Path] = ["chroot", mnt, *CHROOT_ENV]
        runner.run([*chroot, "/usr/bin/python3", "-m", "venv", "--system-site-packages", venv])
        pip: list[str | Path] = ["chroot", mnt, *CHROOT_ENV, *network_env(), f"{venv}/bin/python", "-m", "pip"]
        runner.run([*pip, "install", *PIP_FLAGS, *dependencies])
        frozen = runner.output([*chroot, f"{venv}/bin/python", "-m", "pip", "freeze", "--local"])
    return {"pip_freeze": frozen.splitlines()}
