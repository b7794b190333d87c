"""`pvc-lease-hook`: dnsmasq's --dhcp-script. It hands each lease event to pvcd over pvcd's root-only unix socket
(its path in $PVC_LEASE_SOCKET, the network in $PVC_NETWORK_VNI, both set by pvcd when it starts dnsmasq), and for
`init` prints the leases pvcd has in ZooKeeper in dnsmasq's lease-file format. No secret is on its command line or
in its environment: pvcd holds the ZooKeeper credentials.

dnsmasq calls it as `pvc-lease-hook add|old|del MAC IP [HOSTNAME]` (expiry and client id in DNSMASQ_* variables)
and `pvc-lease-hook init`. Kept to the standard library so that it starts fast.
"""

from __future__ import annotations

import json
import os
import socket
import sys

ENV_SOCKET = "PVC_LEASE_SOCKET"  # (dnsmasq.py sets these)
ENV_VNI = "PVC_NETWORK_VNI"
TIMEOUT = 10.0


def event(argv: list[str], env: dict[str, str]) -> dict:
    """The message for pvcd from dnsmasq's arguments and environment."""
    action = argv[0] if argv else ""
    msg: dict = {"action": action, "vni": int(env.get(ENV_VNI, "0") or 0)}
    if action in ("add", "old", "del") and len(argv) >= 3:
        msg.update(
            mac=argv[1].lower(),
            ip=argv[2],
            hostname=argv[3] if len(argv) > 3 else env.get("DNSMASQ_SUPPLIED_HOSTNAME", ""),
            expires=int(env.get("DNSMASQ_LEASE_EXPIRES", "0") or 0),
            client_id=env.get("DNSMASQ_CLIENT_ID", ""),
        )
    return msg


def ask(socket_path: str, msg: dict, timeout: float = TIMEOUT) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(json.dumps(msg).encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    env = dict(os.environ)
    msg = event(args, env)
    if msg["action"] not in ("init", "add", "old", "del"):
        return 0  # tftp and arp events: nothing to keep
    path = env.get(ENV_SOCKET)
    if not path or not msg["vni"]:
        print(f"pvc-lease-hook: ${ENV_SOCKET} and ${ENV_VNI} must be set (pvcd sets them)", file=sys.stderr)
        return 1
    try:
        reply = ask(path, msg)
    except OSError as exc:
        print(f"pvc-lease-hook: cannot reach pvcd at {path}: {exc}", file=sys.stderr)
        return 1
    if reply.startswith("error:"):
        print(f"pvc-lease-hook: {reply}", file=sys.stderr)
        return 1
    if msg["action"] == "init":
        sys.stdout.write(reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
