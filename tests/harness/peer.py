"""A TCP peer for network tests, run inside a namespace: `python -m tests.harness.peer PORT` accepts connections
forever and greets each with the address it came from (so a test sees NAT), then echoes every line back (so a test
can keep one connection open and check it still carries data). `ask` connects from a namespace and returns the
greeting."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

PORT = 7070


def serve(port: int) -> None:
    srv = socket.create_server(("0.0.0.0", port), reuse_port=True)
    print("listening", flush=True)
    while True:
        conn, (addr, _) = srv.accept()
        threading.Thread(target=echo, args=(conn, addr), daemon=True).start()


def echo(conn: socket.socket, addr: str) -> None:
    with conn:
        conn.sendall(f"{addr}\n".encode())
        while data := conn.recv(4096):
            conn.sendall(data)


ASK = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as s:
    print(s.makefile().readline().strip())
"""


def ask(ns: str, host: str, port: int = PORT, timeout: float = 3.0) -> str:
    """The address the peer at host:port saw this namespace's connection come from ('' if it could not connect)."""
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", ASK, host, str(port), str(timeout)],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
    )
    return out.stdout.strip() if out.returncode == 0 else ""


def start(ns: str, port: int = PORT) -> subprocess.Popen[str]:
    """The peer in a namespace, once it listens; the caller ends it (terminate)."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.harness.peer", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "listening", "the TCP peer did not start"
    return proc


if __name__ == "__main__":
    serve(int(sys.argv[1]))
