"""The lab router's VLAN DHCP (tests/harness/vlandhcp.py): the pure frame and DHCP code."""

from __future__ import annotations

import ipaddress
import socket

from tests.harness import dhcp, vlandhcp

CLIENT = bytes.fromhex("525400aabbcc")
SERVER = bytes.fromhex("525400000001")


def client_frame(kind: int, vid: int | None, requested: str | None = None, inline: bool = True) -> vlandhcp.Frame:
    bootp = dhcp.packet(kind, 0x1234, CLIENT, "guest", requested)
    packet = vlandhcp.udp_ipv4("0.0.0.0", "255.255.255.255", 68, 67, bootp)
    if vid is not None and inline:
        frame = vlandhcp.parse_frame(vlandhcp.tagged(vlandhcp.BROADCAST, CLIENT, vid, vlandhcp.ETH_P_IP, packet))
    else:  # the tag in the packet's metadata, as the kernel hands it over
        raw = vlandhcp.BROADCAST + CLIENT + b"\x08\x00" + packet
        frame = vlandhcp.parse_frame(raw, aux_vid=vid)
    assert frame is not None
    return frame


def answer(server: vlandhcp.Server, frame: vlandhcp.Frame) -> tuple[str, vlandhcp.Frame, dict[int, bytes], str]:
    got = server.answer(frame)
    assert got is not None
    line, out = got
    parsed = vlandhcp.parse_frame(out)
    assert parsed is not None
    bootp = parsed.payload[28:]
    return line, parsed, dhcp.options(bootp), socket.inet_ntoa(bootp[16:20])


def test_discover_then_request_on_the_vlan_get_offer_and_ack_tagged_with_it():
    server = vlandhcp.Server(100, ipaddress.IPv4Network("10.77.0.0/24"), SERVER)
    line, frame, opts, yiaddr = answer(server, client_frame(1, 100))
    assert line == "offer 100 52:54:00:aa:bb:cc 10.77.0.100"
    assert (frame.vid, frame.dst, frame.src, frame.ethertype) == (100, vlandhcp.BROADCAST, SERVER, 0x0800)
    assert yiaddr == "10.77.0.100" and opts[53] == bytes([2])
    assert socket.inet_ntoa(opts[54]) == socket.inet_ntoa(opts[3]) == "10.77.0.1"
    assert socket.inet_ntoa(opts[1]) == "255.255.255.0"
    assert vlandhcp.checksum(frame.payload[:20]) == 0  # a valid IPv4 header checksum
    line, frame, opts, yiaddr = answer(server, client_frame(3, 100, "10.77.0.100", inline=False))
    assert line == "ack 100 52:54:00:aa:bb:cc 10.77.0.100" and opts[53] == bytes([5]) and frame.vid == 100


def test_other_vlans_untagged_frames_and_foreign_requests_get_no_answer():
    server = vlandhcp.Server(100, ipaddress.IPv4Network("10.77.0.0/24"), SERVER)
    assert server.answer(client_frame(1, 200)) is None
    assert server.answer(client_frame(1, None)) is None
    assert server.answer(client_frame(3, 100, "10.9.9.9")) is None  # a REQUEST for another server's offer
    assert vlandhcp.parse_frame(b"\x00" * 10) is None
    arp = vlandhcp.parse_frame(vlandhcp.tagged(vlandhcp.BROADCAST, CLIENT, 100, 0x0806, b"\x00" * 28))
    assert arp is not None and server.answer(arp) is None
    discover = client_frame(1, 100).payload
    assert vlandhcp.parse_request(discover[:30]) is None and vlandhcp.parse_request(discover[:-1] + b"\x0c") is None
