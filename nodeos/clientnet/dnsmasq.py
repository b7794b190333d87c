"""One dnsmasq per managed network, on the primary: DHCPv4 on the network's range, its static reservations, DNS for
its domain forwarding other names to the network's name servers, and router advertisements when it has IPv6. A VM
is known in DNS by its VM name (a dhcp-host entry per NIC MAC, which wins over the name the guest sends, so a fresh
cloud image named "debian" is still "web1"); a VM whose name is not a valid host name keeps the name it sends.

dnsmasq keeps no lease file (`--leasefile-ro`): it hands every lease event to `pvc-lease-hook` (`--dhcp-script`),
which passes it to pvcd, which stores it in ZooKeeper; at start dnsmasq asks the hook (`init`) for the leases it
should know, so they survive the primary moving to another node.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pvc.config import networks
from pvc.nodeos.clientnet.leasehook import ENV_SOCKET, ENV_VNI
from pvc.nodeos.state.models import NetworkRecord

log = logging.getLogger(__name__)

DNSMASQ = "/usr/sbin/dnsmasq"
LEASE_TIME = "1h"
HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # one DNS label (RFC 1123)
# what dnsmasq reads as something else in a dhcp-host line: a keyword, or a lease time like 600 or 5m
NOT_A_NAME = re.compile(r"ignore|infinite|[0-9]+[smhdw]?", re.IGNORECASE)


@dataclass(frozen=True)
class Paths:
    """Where one network's dnsmasq keeps its files (under pvcd's run directory)."""

    root: Path  # <run dir>/dnsmasq/<vni>

    @property
    def hostsdir(self) -> Path:
        return self.root / "hosts"  # one file per reservation or VM NIC, read by dnsmasq as they change

    @property
    def log(self) -> Path:
        return self.root / "dnsmasq.log"


def argv(net: NetworkRecord, paths: Paths, hook: str) -> list[str]:
    """dnsmasq's command line for a managed network (pure)."""
    assert net.subnet is not None and net.gateway is not None, "a managed network has a subnet and a gateway"
    subnet = ipaddress.IPv4Network(net.subnet)
    domain = net.domain or f"{net.name}.local"
    bridge = networks.bridge_name(net.vni)
    args = [
        DNSMASQ,
        "--keep-in-foreground",
        "--conf-file=/dev/null",  # nothing from /etc/dnsmasq.conf
        f"--pid-file={paths.root / 'dnsmasq.pid'}",
        "--log-facility=-",
        "--log-dhcp",
        f"--interface={bridge}",
        "--bind-interfaces",  # this network's addresses only: one dnsmasq per network on one node
        f"--listen-address={net.gateway}",
        "--no-hosts",
        "--domain-needed",
        "--bogus-priv",
        "--expand-hosts",
        f"--domain={domain}",
        f"--local=/{domain}/",
        "--no-resolv",  # forward only to the network's servers, never to the node's resolv.conf
        *[f"--server={server}" for server in net.dns_servers],
    ]
    if net.dhcp is not None:
        args += [
            "--dhcp-authoritative",
            f"--dhcp-range={net.dhcp.start},{net.dhcp.end},{subnet.netmask},{LEASE_TIME}",
            f"--dhcp-option=option:router,{net.gateway}",
            f"--dhcp-option=option:dns-server,{net.gateway}",
            f"--dhcp-option=option:domain-search,{domain}",
            f"--dhcp-hostsdir={paths.hostsdir}",
            "--leasefile-ro",
            f"--dhcp-script={hook}",  # run as root although dnsmasq drops privileges: it reaches pvcd's socket
        ]
    if net.subnet6 is not None and net.gateway6 is not None:
        args += [
            f"--listen-address={net.gateway6}",
            "--enable-ra",
            f"--dhcp-range=::,constructor:{bridge},ra-stateless,ra-names",
            f"--dhcp-option=option6:dns-server,[{net.gateway6}]",
        ]
    if net.mtu:
        args.append(f"--dhcp-option=option:mtu,{net.mtu}")
    return args


def host_files(net: NetworkRecord, vm_names: Mapping[str, str] | None = None) -> dict[str, str]:
    """File name -> content of dnsmasq's --dhcp-hostsdir (pure): each static reservation (its address, and its host
    name, else the VM's), and each other VM NIC on the network (`vm_names`: MAC -> VM name) with its VM's name."""
    names = {
        mac.lower(): name
        for mac, name in (vm_names or {}).items()
        if HOSTNAME.fullmatch(name) and not NOT_A_NAME.fullmatch(name)
    }
    files = {}
    for res in net.reservations:
        hostname = res.hostname or names.get(res.mac.lower())
        parts = [res.mac, str(res.ip)] + ([hostname] if hostname else [])
        files[res.mac.replace(":", "-")] = ",".join(parts) + "\n"
    for mac, name in sorted(names.items()):
        files.setdefault(mac.replace(":", "-"), f"{mac},{name}\n")
    return files


def init_lines(leases: list[tuple[int, str, str, str, str]]) -> str:
    """What the lease hook prints for dnsmasq's `init`: one `expires mac ip hostname client-id` line per lease
    (dnsmasq's lease-file format; '*' for an unknown name or client id)."""
    return "".join(f"{exp} {mac} {ip} {host or '*'} {cid or '*'}\n" for exp, mac, ip, host, cid in leases)


class Dnsmasq:
    """One running dnsmasq, restarted when its command line changes, told (SIGHUP) when its reservations do."""

    def __init__(self, net: NetworkRecord, paths: Paths, hook: str, socket_path: str) -> None:
        self.vni = net.vni
        self.paths = paths
        self.hook = hook
        self.socket_path = socket_path
        self.argv: list[str] = []
        self.hosts: dict[str, str] = {}
        self.proc: subprocess.Popen | None = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def converge(self, net: NetworkRecord, vm_names: Mapping[str, str] | None = None) -> str | None:
        """Start, restart or refresh to serve `net` (and the VM names on it); returns what it did (None: nothing)."""
        wanted = argv(net, self.paths, self.hook)
        hosts_changed = self._write_hosts(host_files(net, vm_names))
        if self.running() and wanted == self.argv:
            if hosts_changed:
                self._signal(signal.SIGHUP)
                return "reservations and VM names reloaded"
            return None
        restarted = self.running()
        self.stop()
        self.argv = wanted
        self.paths.root.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), ENV_SOCKET: self.socket_path}
        env[ENV_VNI] = str(self.vni)
        with open(self.paths.log, "ab") as out:
            self.proc = subprocess.Popen(
                wanted, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        return "restarted" if restarted else "started"

    def _write_hosts(self, files: dict[str, str]) -> bool:
        if files == self.hosts and self.paths.hostsdir.is_dir():
            return False
        self.paths.hostsdir.mkdir(parents=True, exist_ok=True)
        for stale in self.paths.hostsdir.iterdir():
            if stale.name not in files:
                stale.unlink()
        for name, text in files.items():
            path = self.paths.hostsdir / name
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
        self.hosts = dict(files)
        return True

    def _signal(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(3)
        self.proc = None
