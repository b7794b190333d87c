"""Booting the test guest with plain QEMU: a NoCloud seed ISO, the QEMU command line, and a running guest whose serial
console is watched and which answers SSH on a host loopback port (user-mode networking). The system test
(tests/system/test_guest_image.py) and bench/guest.py use it; it is a harness, not something a node runs.

Accelerator: the lab's `accelerator()` (KVM where it boots a stock kernel, TCG here; PVC_LAB_ACCEL overrides).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from pvc.installer.lab.vm import OVMF_CODE, OVMF_VARS, accel_args, accelerator
from pvc.nodeos.provisioner import seed

# What the guest prints on its serial console: agetty's prompt, and cloud-init's final message.
LOGIN_PROMPT = re.compile(r"\S+ login: ")
CLOUD_INIT_DONE = re.compile(r"Cloud-init v\. \S+ finished at")
FIRMWARES = ("bios", "uefi")


class GuestError(Exception):
    """The guest did not get where it should, with the last lines of its console."""


def meta_data(instance_id: str, hostname: str) -> str:
    """NoCloud meta-data (YAML), as `pvc vm create` writes it."""
    return seed.yaml_text(seed.meta(instance_id, hostname, {}))


def seed_iso(dest: Path, files: dict[str, str]) -> Path:
    """A NoCloud seed: the `cidata` ISO `pvc vm create` writes (pvc.nodeos.provisioner.seed), holding `files`
    (meta-data, user-data, network-config)."""
    dest.write_bytes(seed.iso(files))
    return dest


@dataclass(frozen=True)
class GuestSpec:
    """One QEMU run of the guest: `disk` is written to (give it a qcow2 overlay over the image), `seed` is attached
    read-only as a second virtio disk when given."""

    disk: Path
    workdir: Path
    seed: Path | None = None
    firmware: str = "bios"  # bios: SeaBIOS on the i440fx machine; uefi: OVMF on q35
    memory_mib: int = 1024
    cpus: int = 2
    ssh_port: int = 0  # host loopback port forwarded to the guest's sshd; 0: none
    accel: str = field(default_factory=accelerator)

    @property
    def serial_log(self) -> Path:
        return self.workdir / "serial.log"

    @property
    def qmp_socket(self) -> Path:
        return self.workdir / "qmp.sock"

    @property
    def agent_socket(self) -> Path:
        """The host end of the guest agent's virtio-serial port (org.qemu.guest_agent.0, as libvirt names it)."""
        return self.workdir / "qga.sock"


def qemu_argv(spec: GuestSpec) -> list[str]:
    """The QEMU command line: the disk as the first virtio disk, one virtio NIC on user-mode networking (with the
    SSH port forwarded), the guest agent's channel, the serial port into a file, QMP on a socket, no display."""
    if spec.firmware not in FIRMWARES:
        raise GuestError(f"firmware must be one of {', '.join(FIRMWARES)}, not {spec.firmware!r}")
    machine = "q35" if spec.firmware == "uefi" else "pc"
    argv = ["qemu-system-x86_64", "-name", "pvc-guest", "-machine", machine, *accel_args(spec.accel)]
    argv += ["-smp", str(spec.cpus), "-m", str(spec.memory_mib), "-nodefaults", "-no-user-config"]
    if spec.firmware == "uefi":
        vars_fd = spec.workdir / "OVMF_VARS.fd"
        if not vars_fd.exists():
            shutil.copyfile(OVMF_VARS, vars_fd)
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}"]
        argv += ["-drive", f"if=pflash,format=raw,file={vars_fd}"]
    argv += ["-drive", f"file={spec.disk},if=virtio,format=qcow2,cache=unsafe"]
    if spec.seed is not None:
        argv += ["-drive", f"file={spec.seed},if=virtio,format=raw,readonly=on"]
    netdev = "user,id=net0"
    if spec.ssh_port:
        netdev += f",hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22"
    argv += ["-netdev", netdev, "-device", "virtio-net-pci,netdev=net0"]
    if spec.firmware == "uefi":
        argv += ["-device", "pcie-root-port,id=hotplug0,chassis=1"]  # q35: a slot a NIC can be hot-plugged into
    argv += ["-chardev", f"socket,id=qga0,path={spec.agent_socket},server=on,wait=off", "-device", "virtio-serial"]
    argv += ["-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"]
    argv += ["-device", "virtio-rng-pci", "-vga", "std", "-display", "none"]
    argv += ["-serial", f"file:{spec.serial_log}", "-qmp", f"unix:{spec.qmp_socket},server=on,wait=off"]
    return argv


def overlay_disk(image: Path, dest: Path) -> Path:
    """A qcow2 overlay backed by the (read-only) guest image: each boot starts from the pristine image."""
    res = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.resolve()), str(dest)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise GuestError(f"qemu-img create {dest}: {res.stderr.strip()}")
    return dest


class Guest:
    """A running guest (a QEMU child process): wait for its console, run commands over SSH, talk QMP, stop it."""

    def __init__(self, spec: GuestSpec) -> None:
        self.spec = spec
        spec.workdir.mkdir(parents=True, exist_ok=True)
        spec.serial_log.unlink(missing_ok=True)
        self.stderr = (spec.workdir / "qemu.stderr").open("w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            qemu_argv(spec), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr
        )

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def console(self) -> str:
        return self.spec.serial_log.read_text(errors="replace") if self.spec.serial_log.exists() else ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.console().splitlines()[-lines:])

    def wait_for(self, pattern: re.Pattern[str] | str, timeout: float) -> float:
        """Seconds from QEMU's start until `pattern` appears on the serial console."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if regex.search(self.console()):
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                raise GuestError(f"QEMU exited ({self.proc.returncode}) before {regex.pattern!r}:\n{self.tail()}")
            time.sleep(0.25)
        raise GuestError(f"no {regex.pattern!r} on the console after {timeout:.0f} s; last lines:\n{self.tail()}")

    def ssh_argv(self, key: Path, command: str, user: str = "root") -> list[str]:
        opts = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"]
        opts += ["-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "-i", str(key), "-p", str(self.spec.ssh_port)]
        return ["ssh", *opts, f"{user}@127.0.0.1", command]

    def ssh(self, key: Path, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `command` in the guest as root over SSH, retrying while sshd is not up yet (exit 255)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                res = subprocess.run(self.ssh_argv(key, command), capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise GuestError(f"ssh {command!r} took more than {timeout:.0f} s") from exc
            if res.returncode != 255 or time.monotonic() > deadline:
                return res
            time.sleep(1)

    def qmp(self, *commands: dict) -> list[dict]:
        """Run QMP commands (after the capabilities handshake); their replies, an error reply raising GuestError."""
        return _json_exchange(self.spec.qmp_socket, [{"execute": "qmp_capabilities"}, *commands], greeting=True)[1:]

    def agent(self, command: str, timeout: float = 60) -> dict:
        """One guest agent command (e.g. guest-get-host-name) once the agent answers: its reply. Each try starts with
        guest-sync and a fresh id, so a reply left over from an earlier try is never taken for this one."""
        deadline = time.monotonic() + timeout
        while True:
            sync = secrets.randbelow(2**31)
            try:
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.settimeout(5)
                    sock.connect(str(self.spec.agent_socket))
                    stream = sock.makefile("rw")
                    stream.write(json.dumps({"execute": "guest-sync", "arguments": {"id": sync}}) + "\n")
                    stream.flush()
                    while _json_line(stream).get("return") != sync:
                        pass
                    return _json_exchange_on(stream, {"execute": command})
            except (OSError, ValueError) as exc:
                if time.monotonic() > deadline:
                    raise GuestError(f"the guest agent did not answer {command} in {timeout:.0f} s: {exc}") from None
                time.sleep(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


def _json_exchange(path: Path, commands: list[dict], greeting: bool = False) -> list[dict]:
    """Send JSON commands over a QEMU socket (QMP), one reply each."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        stream = sock.makefile("rw")
        if greeting:
            json.loads(stream.readline())
        return [_json_exchange_on(stream, cmd) for cmd in commands]


def _json_exchange_on(stream: TextIO, cmd: dict) -> dict:
    """One command and its reply; asynchronous events are skipped, an error reply raises GuestError."""
    stream.write(json.dumps(cmd) + "\n")
    stream.flush()
    while True:
        reply = _json_line(stream)
        if "error" in reply:
            raise GuestError(f"{cmd['execute']}: {reply['error'].get('desc')}")
        if "return" in reply:
            return reply


def _json_line(stream: TextIO) -> dict:
    line = stream.readline()
    if not line:
        raise ValueError("the socket closed the connection")
    return json.loads(line)
