"""`pvc-lab down`: power every node off and remove what `up` created (processes, namespaces, mounts, loop
devices, the lab folder), keeping the consoles of the last lab for a post-mortem in LAB_DIR.last."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from pvc.installer.lab import network, pxe, state, upstream
from pvc.installer.lab.observe import Say
from pvc.installer.lab.state import LAB_DIR


def kill_group(pid: int, sig: int, group: bool = True) -> None:
    """Signal a process (group) we started, and wait up to 15 s for it to be gone."""
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.2)


def down(say: Say = print) -> None:
    lab = state.read()
    if lab.forward_pid:
        kill_group(lab.forward_pid, signal.SIGKILL)
    for node in lab.nodes:
        if node.supervisor_pid:
            kill_group(node.supervisor_pid, signal.SIGTERM)
    for power in state.power().values():  # anything the supervisor did not get to
        for pid in (power.init_pid, power.nspawn_pid):
            if pid:
                kill_group(pid, signal.SIGKILL, group=False)
    if lab.pxe is not None:
        pxe.stop(lab.pxe.pids)
    if lab.upstream is not None:
        for pid in lab.upstream.pids:
            kill_group(pid, signal.SIGTERM)
    time.sleep(0.5)
    names = [n.name for n in lab.nodes]
    if lab.upstream is not None:
        upstream.destroy(lab.upstream)
    network.destroy(lab.lab_ns, names)
    if lab.mounted:
        for _ in range(20):
            if subprocess.run(["umount", lab.root], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
    for loop in lab.loops:
        subprocess.run(["losetup", "-d", loop], capture_output=True)
    keep = LAB_DIR.parent / (LAB_DIR.name + ".last")
    shutil.rmtree(keep, ignore_errors=True)
    state.make_dir(keep)
    if (LAB_DIR / "supervisor.log").exists():
        shutil.copy(LAB_DIR / "supervisor.log", keep / "supervisor.log")
    for node in lab.nodes:  # keep the consoles of the last lab for a post-mortem
        (keep / node.name).mkdir(parents=True, exist_ok=True)
        src = Path(node.console_log)
        if src.exists():
            shutil.copy(src, keep / node.name / "console.log")
    shutil.rmtree(LAB_DIR, ignore_errors=True)
    say(f"lab: down ({len(names)} node(s) powered off, namespaces and loop devices removed; consoles kept in {keep})")
