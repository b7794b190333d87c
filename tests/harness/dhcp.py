"""A tiny DHCPv4 client for test guests (this machine has no dhclient or udhcpc): DISCOVER, OFFER, REQUEST, ACK on
one interface, then the address and the default route are set. Run inside the guest's namespace:

    ip netns exec GUEST python -m tests.harness.dhcp IFACE HOSTNAME

Prints the lease as JSON: {"ip", "prefix", "router", "dns", "lease"}.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

MAGIC = b"\x63\x82\x53\x63"


def packet(kind: int, xid: int, mac: bytes, hostname: str, requested: str | None = None, server: str | None = None):
    head = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1,
        1,
        6,
        0,
        xid,
        0,
        0x8000,
        b"\0" * 4,
        b"\0" * 4,
        b"\0" * 4,
        b"\0" * 4,
        mac.ljust(16, b"\0"),
        b"",
        b"",
    )
    opts = bytes([53, 1, kind]) + bytes([12, len(hostname)]) + hostname.encode()
    if requested:
        opts += bytes([50, 4]) + socket.inet_aton(requested)
    if server:
        opts += bytes([54, 4]) + socket.inet_aton(server)
    opts += bytes([55, 4, 1, 3, 6, 51]) + b"\xff"
    return head + MAGIC + opts


def options(data: bytes) -> dict[int, bytes]:
    out, i = {}, 240
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        code, length = data[i], data[i + 1]
        out[code] = data[i + 2 : i + 2 + length]
        i += 2 + length
    return out


def exchange(sock: socket.socket, msg: bytes, xid: int, want: int, timeout: float) -> tuple[str, dict[int, bytes]]:
    deadline = time.monotonic() + timeout
    sock.sendto(msg, ("255.255.255.255", 67))
    next_send = time.monotonic() + 2
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, min(next_send, deadline) - time.monotonic()))
        try:
            data, _ = sock.recvfrom(4096)
        except TimeoutError:
            sock.sendto(msg, ("255.255.255.255", 67))
            next_send = time.monotonic() + 2
            continue
        if len(data) < 244 or struct.unpack("!I", data[4:8])[0] != xid:
            continue
        opts = options(data)
        if opts.get(53) == bytes([want]):
            return socket.inet_ntoa(data[16:20]), opts
        if opts.get(53) == bytes([6]):
            raise RuntimeError("DHCPNAK")
    raise TimeoutError(f"no DHCP answer ({want}) in {timeout} s")


def lease(iface: str, hostname: str, timeout: float = 30.0) -> dict:
    mac = bytes.fromhex(Path(f"/sys/class/net/{iface}/address").read_text().strip().replace(":", ""))
    xid = random.getrandbits(32)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        sock.bind(("0.0.0.0", 68))
        offered, opts = exchange(sock, packet(1, xid, mac, hostname), xid, 2, timeout)
        server = socket.inet_ntoa(opts[54])
        acked, opts = exchange(sock, packet(3, xid, mac, hostname, offered, server), xid, 5, timeout)
    mask = socket.inet_ntoa(opts.get(1, b"\xff\xff\xff\x00"))
    prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
    return {
        "ip": acked,
        "prefix": prefix,
        "router": socket.inet_ntoa(opts[3][:4]) if 3 in opts else None,
        "dns": socket.inet_ntoa(opts[6][:4]) if 6 in opts else None,
        "lease": struct.unpack("!I", opts[51])[0] if 51 in opts else None,
    }


def main() -> None:
    iface, hostname = sys.argv[1], sys.argv[2]
    got = lease(iface, hostname)
    subprocess.run(["ip", "addr", "flush", "dev", iface], check=True)
    subprocess.run(["ip", "addr", "add", f"{got['ip']}/{got['prefix']}", "dev", iface], check=True)
    if got["router"]:
        subprocess.run(["ip", "route", "replace", "default", "via", got["router"]], check=True)
    print(json.dumps(got), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
