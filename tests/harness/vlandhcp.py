"""A DHCPv4 server for one 802.1Q VLAN, in user space: the lab router's DHCP on a bridged client network.

The lab host's kernel has no VLAN devices, but its bridges forward tagged frames unchanged, so this reads and writes
the tagged frames itself with an AF_PACKET socket on a lab bridge (the bridge a node's `[network.bridged] device` is
on). The kernel moves a received frame's tag into the packet's metadata (PACKET_AUXDATA); a frame it hands over
with the tag still inline is read too. Answers carry the VLAN tag of the request. Run in the lab's namespace:

    ip netns exec LABNS python -m tests.harness.vlandhcp BRIDGE VID SUBNET

Serves SUBNET's first address as server and router, leases from its .100 on; prints one line per event
("offer VID MAC IP" / "ack VID MAC IP"), flushed, for the test to read. Everything but `serve` is pure.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
from dataclasses import dataclass, field

from tests.harness.dhcp import MAGIC, options

ETH_P_ALL = 0x0003
ETH_P_8021Q = 0x8100
ETH_P_IP = 0x0800
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4  # sll_pkttype of a frame this host sent
TP_STATUS_VLAN_VALID = 0x10
AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
DISCOVER, OFFER, REQUEST, ACK = 1, 2, 3, 5
BROADCAST = b"\xff" * 6
LEASE_SECONDS = 600


@dataclass(frozen=True)
class Frame:
    dst: bytes
    src: bytes
    vid: int | None  # None: untagged
    ethertype: int
    payload: bytes


def tagged(dst: bytes, src: bytes, vid: int, ethertype: int, payload: bytes) -> bytes:
    """An Ethernet frame with an inline 802.1Q tag (priority 0)."""
    return dst + src + struct.pack("!HHH", ETH_P_8021Q, vid & 0x0FFF, ethertype) + payload


def parse_frame(data: bytes, aux_vid: int | None = None) -> Frame | None:
    """A received frame; `aux_vid` is the tag the kernel took off (PACKET_AUXDATA), an inline tag wins."""
    if len(data) < 14:
        return None
    dst, src = data[:6], data[6:12]
    (ethertype,) = struct.unpack("!H", data[12:14])
    if ethertype == ETH_P_8021Q:
        if len(data) < 18:
            return None
        tci, ethertype = struct.unpack("!HH", data[14:18])
        return Frame(dst, src, tci & 0x0FFF, ethertype, data[18:])
    return Frame(dst, src, aux_vid, ethertype, data[14:])


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_ipv4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4 header + UDP datagram (UDP checksum 0: none, allowed over IPv4)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst)
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + udp


@dataclass(frozen=True)
class Request:
    xid: int
    chaddr: bytes  # the client's MAC
    kind: int  # DHCP message type
    requested: str | None  # option 50


def parse_request(ip_packet: bytes) -> Request | None:
    """A DHCP client message (BOOTREQUEST to UDP port 67) out of an IPv4 packet, else None."""
    if len(ip_packet) < 20 or ip_packet[0] >> 4 != 4 or ip_packet[9] != 17:
        return None
    ihl = (ip_packet[0] & 0x0F) * 4
    if len(ip_packet) < ihl + 8:
        return None
    _sport, dport = struct.unpack("!HH", ip_packet[ihl : ihl + 4])
    bootp = ip_packet[ihl + 8 :]
    if dport != 67 or len(bootp) < 240 or bootp[0] != 1 or bootp[236:240] != MAGIC:
        return None
    try:
        opts = options(bootp)
    except IndexError:  # an option cut off by the end of the packet
        return None
    if 53 not in opts:
        return None
    requested = socket.inet_ntoa(opts[50]) if len(opts.get(50, b"")) == 4 else None
    return Request(struct.unpack("!I", bootp[4:8])[0], bootp[28:34], opts[53][0], requested)


def reply(kind: int, req: Request, yiaddr: str, server: str, netmask: str) -> bytes:
    """A BOOTREPLY (OFFER or ACK): the address, the mask, the server as router, the lease time."""
    head = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        2,
        1,
        6,
        0,
        req.xid,
        0,
        0x8000,
        b"\0" * 4,
        socket.inet_aton(yiaddr),
        socket.inet_aton(server),
        b"\0" * 4,
        req.chaddr.ljust(16, b"\0"),
        b"",
        b"",
    )
    opts = bytes([53, 1, kind, 54, 4]) + socket.inet_aton(server)
    opts += bytes([1, 4]) + socket.inet_aton(netmask) + bytes([3, 4]) + socket.inet_aton(server)
    opts += bytes([51, 4]) + struct.pack("!I", LEASE_SECONDS) + b"\xff"
    return head + MAGIC + opts


@dataclass
class Server:
    """One VLAN's DHCP: its id, subnet, the server's MAC, and the leases handed out (MAC -> address)."""

    vid: int
    subnet: ipaddress.IPv4Network
    mac: bytes
    leases: dict[bytes, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return str(self.subnet.network_address + 1)

    def lease_for(self, mac: bytes) -> str:
        if mac not in self.leases:
            self.leases[mac] = str(self.subnet.network_address + 100 + len(self.leases))
        return self.leases[mac]

    def answer(self, frame: Frame) -> tuple[str, bytes] | None:
        """(event line, tagged answer frame) for a DHCP DISCOVER/REQUEST on this VLAN, else None."""
        if frame.vid != self.vid or frame.ethertype != ETH_P_IP:
            return None
        req = parse_request(frame.payload)
        if req is None or req.kind not in (DISCOVER, REQUEST):
            return None
        addr = self.lease_for(req.chaddr)
        if req.kind == REQUEST and req.requested not in (None, addr):
            return None  # another server's offer: stay quiet
        kind, event = (OFFER, "offer") if req.kind == DISCOVER else (ACK, "ack")
        bootp = reply(kind, req, addr, self.address, str(self.subnet.netmask))
        packet = udp_ipv4(self.address, "255.255.255.255", 67, 68, bootp)
        mac = ":".join(f"{b:02x}" for b in req.chaddr)
        return f"{event} {self.vid} {mac} {addr}", tagged(BROADCAST, self.mac, self.vid, ETH_P_IP, packet)


def aux_vid(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= AUXDATA.size:
            status, _len, _snap, _mac, _net, tci, _tpid = AUXDATA.unpack(data[: AUXDATA.size])
            if status & TP_STATUS_VLAN_VALID:
                return tci & 0x0FFF
    return None


def serve(iface: str, server: Server) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    sock.bind((iface, ETH_P_ALL))
    print(f"serving VLAN {server.vid} on {iface} as {server.address}", flush=True)
    while True:
        data, ancdata, _flags, addr = sock.recvmsg(65535, socket.CMSG_SPACE(AUXDATA.size))
        if addr[2] == PACKET_OUTGOING:
            continue
        frame = parse_frame(data, aux_vid(ancdata))
        answered = server.answer(frame) if frame else None
        if answered:
            line, out = answered
            sock.send(out)
            print(line, flush=True)


def main() -> None:
    iface, vid, subnet = sys.argv[1], int(sys.argv[2]), ipaddress.IPv4Network(sys.argv[3])
    with open(f"/sys/class/net/{iface}/address") as f:
        mac = bytes.fromhex(f.read().strip().replace(":", ""))
    serve(iface, Server(vid, subnet, mac))


if __name__ == "__main__":
    main()
