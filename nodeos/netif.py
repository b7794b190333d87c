"""Addresses on the node's interfaces (pyroute2): the floating IPs the primary coordinator holds."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import struct

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pvc.config.schema import ClusterFile

log = logging.getLogger(__name__)


def _index(ipr: IPRoute, device: str) -> int | None:
    found = ipr.link_lookup(ifname=device)
    return found[0] if found else None


def add_address(device: str, address: str, prefixlen: int) -> bool:
    with IPRoute() as ipr:
        index = _index(ipr, device)
        if index is None:
            log.error("cannot add %s/%s: no interface %s", address, prefixlen, device)
            return False
        try:
            ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
        except NetlinkError as exc:
            if exc.code != 17:  # EEXIST: already there
                log.error("cannot add %s/%s to %s: %s", address, prefixlen, device, exc)
                return False
    try:
        announce(device, address)
    except OSError as exc:  # the address works; neighbours learn it when their cache entries expire
        log.warning("cannot announce %s on %s (gratuitous ARP): %s", address, device, exc)
    return True


def garp_frame(mac: bytes, address: str) -> bytes:
    """A gratuitous ARP request (sender = target = `address`), broadcast: neighbours and switches update their
    caches at once when a floating IP moves to this node, instead of after their ARP entries expire."""
    ip = ipaddress.IPv4Address(address).packed
    ether = b"\xff" * 6 + mac + struct.pack("!H", 0x0806)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\x00" * 6 + ip
    return ether + arp


def announce(device: str, address: str, count: int = 2) -> None:
    with open(f"/sys/class/net/{device}/address") as fh:
        mac = bytes.fromhex(fh.read().strip().replace(":", ""))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((device, 0))
        for _ in range(count):
            sock.send(garp_frame(mac, address))


def remove_address(device: str, address: str, prefixlen: int) -> None:
    with IPRoute() as ipr:
        index = _index(ipr, device)
        if index is None:
            return
        with contextlib.suppress(NetlinkError):
            ipr.addr("del", index=index, address=address, prefixlen=prefixlen)


def floating_ips(cfg: ClusterFile) -> list[tuple[str, str, int]]:
    """(device, address, prefixlen) of every floating IP in cluster.toml: one on each core network."""
    return [(n.device, str(n.floating_ip), ipaddress.IPv4Network(n.subnet).prefixlen) for _, n in cfg.core_networks()]
