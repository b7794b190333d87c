"""systemd units that formation writes to /run/systemd/system (pure rendering) and starts (thin I/O).

The image enables none of the Debian packages' services: every service runs from a unit rendered here, so its
command line, user and ordering are part of PVC and rendered again from cluster.toml at every boot.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from pvc.nodeos.formation.machinery import StepFailed, bounded, doing, run, write

UNIT_DIR = Path("/run/systemd/system")


def render(
    description: str,
    exec_start: list[str],
    *,
    user: str | None = None,
    after: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    type: str = "simple",
    restart: str = "always",
    limit_nofile: int | None = None,
    exec_start_pre: list[list[str]] | None = None,
    service: tuple[str, ...] = (),
    watchdog_sec: int | None = None,
) -> str:
    """A unit file. `service`: more [Service] lines, as they are (sandboxing)."""
    lines = [
        "[Unit]",
        f"Description={description}",
        "After=network-online.target local-fs.target " + " ".join(after),
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        f"Type={type}",
        *[f"ExecStartPre={_quote(cmd)}" for cmd in exec_start_pre or []],
        f"ExecStart={_quote(exec_start)}",
        f"Restart={restart}",
        "RestartSec=2",
        "TimeoutStopSec=30",
    ]
    if user:
        lines.append(f"User={user}")
    for key, value in sorted((env or {}).items()):
        lines.append(f'Environment="{key}={value}"')
    if limit_nofile:
        lines.append(f"LimitNOFILE={limit_nofile}")
    lines += list(service)
    if watchdog_sec:  # the service tells systemd it is alive (sd_notify WATCHDOG=1), or systemd restarts it
        lines += [f"WatchdogSec={watchdog_sec}", "NotifyAccess=main"]
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(line.rstrip() for line in lines)


def _quote(argv: list[str]) -> str:
    out = []
    for arg in argv:
        if not arg or any(c in arg for c in " \"'\\;$%"):
            out.append('"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$") + '"')
        else:
            out.append(arg)
    return " ".join(out)


def install(name: str, text: str) -> bool:
    changed = write(UNIT_DIR / name, text)
    if changed:
        run("systemctl", "daemon-reload")
    return changed


def ensure_running(name: str, changed: bool) -> None:
    """Start the unit; restart it if its files changed while it ran."""
    if changed and is_active(name):
        run("systemctl", "restart", name, timeout=180)
    else:
        run("systemctl", "start", name, timeout=180)


def is_active(name: str) -> bool:
    try:
        with doing(f"asking systemd whether {name} is active"):
            out = subprocess.run(["systemctl", "is-active", "--quiet", name], capture_output=True, timeout=bounded(30))
    except subprocess.TimeoutExpired:
        raise StepFailed(f"systemctl is-active {name} did not answer in 30 s") from None
    return out.returncode == 0


def journal(name: str, lines: int = 30) -> str:
    """The unit's last journal lines, for a failure message ("" if journalctl does not answer in time)."""
    argv = ["journalctl", "--no-pager", "-q", "-o", "cat", "-n", str(lines), "-u", name]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except subprocess.TimeoutExpired:
        return f"(journalctl -u {name} did not answer in 30 s)"


def check_alive(name: str) -> None:
    """StepFailed with the unit's journal if it is not running (for use inside readiness probes)."""
    if not is_active(name):
        raise StepFailed(f"{name} is not running", journal(name))
