"""Power control of a node's BMC with ipmitool (IPMI v2 lanplus), as the fencer uses it."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pvc.config.load import resolve_file
from pvc.config.schema import Ipmi


class IpmiError(Exception):
    pass


@dataclass(frozen=True)
class Bmc:
    address: str
    username: str
    password: str
    interface: str = "lanplus"
    port: int = 623

    @classmethod
    def from_config(cls, ipmi: Ipmi, base_dir: Path | None) -> Bmc:
        if ipmi.password is not None:
            password = ipmi.password
        else:
            path = resolve_file(ipmi.password_file or "", base_dir)
            try:
                password = path.read_text().strip()
            except OSError as exc:
                raise IpmiError(f"cannot read the BMC password file {path}: {exc.strerror}") from None
        return cls(ipmi.address, ipmi.username, password, ipmi.interface, ipmi.port)

    def _run(self, *args: str, timeout: float = 10) -> str:
        argv = [
            "ipmitool",
            "-I",
            self.interface,
            "-H",
            self.address,
            "-p",
            str(self.port),
            "-U",
            self.username,
            "-E",
            "-N",
            "1",
            "-R",
            "2",
            *args,
        ]  # -E: password from IPMI_PASSWORD, never on the command line
        try:
            out = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={"IPMI_PASSWORD": self.password, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
            )
        except subprocess.TimeoutExpired:
            raise IpmiError(f"BMC {self.address}: no answer within {timeout:.0f}s") from None
        except FileNotFoundError:
            raise IpmiError("ipmitool is not installed") from None
        if out.returncode != 0:
            msg = (out.stderr or out.stdout).strip().splitlines()
            raise IpmiError(f"BMC {self.address}: {msg[-1] if msg else 'ipmitool failed'}")
        return out.stdout.strip()

    def power_status(self) -> str:
        """'on' or 'off'."""
        out = self._run("chassis", "power", "status").lower()
        if out.endswith(" on"):
            return "on"
        if out.endswith(" off"):
            return "off"
        raise IpmiError(f"BMC {self.address}: unexpected answer '{out}'")

    def power_off(self) -> str:
        """Hard power-off; returns the BMC's answer (e.g. "Chassis Power Control: Down/Off")."""
        return self._run("chassis", "power", "off")

    def power_on(self) -> str:
        return self._run("chassis", "power", "on")

    def confirm_off(self, timeout: float = 10, interval: float = 0.5) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.power_status() == "off":
                    return True
            except IpmiError:
                pass
            time.sleep(interval)
        return False
