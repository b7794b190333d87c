"""The lab router's VLAN DHCP (tests/harness/vlandhcp.py) on a real bridge: a hand-made 802.1Q-tagged DISCOVER from a
veth port of the bridge gets a tagged OFFER back, which is what the vm lab's bridged-network check relies on (this
kernel has no VLAN devices, so the tag is read and written by the responder itself)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.harness import dhcp
from tests.harness.ports import NS_PREFIX

NS = f"{NS_PREFIX}-vdhcp"
CLIENT = bytes.fromhex("525400aabbcc")

# sends one tagged DISCOVER out of `vb` and prints the answer frame as hex (inline tag, or the kernel's metadata tag)
SEND = """
import socket, sys
from tests.harness import dhcp, vlandhcp
vid, attempts = int(sys.argv[1]), int(sys.argv[2])
bootp = dhcp.packet(1, 0x4242, bytes.fromhex("525400aabbcc"), "guest")
ip = vlandhcp.udp_ipv4("0.0.0.0", "255.255.255.255", 68, 67, bootp)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(vlandhcp.ETH_P_ALL))
s.setsockopt(vlandhcp.SOL_PACKET, vlandhcp.PACKET_AUXDATA, 1)
s.bind(("vb", vlandhcp.ETH_P_ALL))
s.settimeout(1.0)
for attempt in range(attempts):
    s.send(vlandhcp.tagged(vlandhcp.BROADCAST, bytes.fromhex("525400aabbcc"), vid, vlandhcp.ETH_P_IP, ip))
    try:
        while True:
            data, anc, _f, addr = s.recvmsg(65535, socket.CMSG_SPACE(vlandhcp.AUXDATA.size))
            if addr[2] == vlandhcp.PACKET_OUTGOING:
                continue
            frame = vlandhcp.parse_frame(data, vlandhcp.aux_vid(anc))
            if frame and frame.ethertype == vlandhcp.ETH_P_IP and frame.payload[22:24] == b"\\x00\\x44":
                print(frame.vid, frame.payload.hex())
                sys.exit(0)
    except TimeoutError:
        pass
sys.exit(1)
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def bridge_ns():
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    ip("netns", "add", NS)
    try:
        ip("-n", NS, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
        ip("-n", NS, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        ip("-n", NS, "link", "set", "va", "master", "br0")
        for dev in ("br0", "va", "vb"):
            ip("-n", NS, "link", "set", dev, "up")
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def test_a_tagged_discover_on_a_bridge_port_gets_a_tagged_offer(bridge_ns):
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            bridge_ns,
            sys.executable,
            "-m",
            "tests.harness.vlandhcp",
            "br0",
            "100",
            "10.77.0.0/24",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("serving VLAN 100 on br0")
        started = time.monotonic()
        other = subprocess.run(
            ["ip", "netns", "exec", bridge_ns, sys.executable, "-c", SEND, "200", "2"], capture_output=True, timeout=30
        )
        assert other.returncode == 1, other  # another VLAN's DISCOVER: no answer
        got = subprocess.run(
            ["ip", "netns", "exec", bridge_ns, sys.executable, "-c", SEND, "100", "5"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert got.returncode == 0, got.stderr
        vid, payload = got.stdout.split()
        bootp = bytes.fromhex(payload)[28:]
        assert vid == "100" and dhcp.options(bootp)[53] == bytes([2])  # an OFFER, tagged with the VLAN
        assert bootp[16:20] == bytes([10, 77, 0, 100]) and bootp[28:34] == CLIENT
        assert server.stdout.readline().strip() == "offer 100 52:54:00:aa:bb:cc 10.77.0.100"
        print(f"tagged DISCOVER to OFFER in {time.monotonic() - started:.1f} s (after a 2 s silent other VLAN)")
    finally:
        server.kill()
        server.wait()
