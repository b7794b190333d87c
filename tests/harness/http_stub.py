"""A tiny real HTTP(S) server on 127.0.0.1 for the CLI's client tests, and a self-signed certificate for it.

Each route answers with a fixed status and JSON body (or a function of the request); every request is recorded.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.harness.ports import free_port

Answer = tuple[int, object]  # status, JSON body (bytes: sent as is, text/html)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Stub:
    routes: dict[tuple[str, str], Answer | Callable[[Seen], Answer]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""  # set by the fixture that serves it
    env: dict[str, str] = field(default_factory=dict)  # the environment a test runs `pvc` with against it

    def answer(self, request: Seen) -> Answer:
        self.seen.append(request)
        route = self.routes.get((request.method, request.path.split("?")[0]))
        if route is None:
            return 404, {"error": "not found", "detail": f"no route {request.path}", "field": None}
        return route(request) if callable(route) else route


def serve(stub: Stub, tls: ssl.SSLContext | None = None) -> tuple[ThreadingHTTPServer, str]:
    """Start `stub` on a free port; returns the server (call .shutdown()) and its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, payload = stub.answer(Seen(self.command, self.path, dict(self.headers.items()), body))
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html" if isinstance(payload, bytes) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), name="stub-api", daemon=True).start()
    scheme = "https" if tls else "http"
    return server, f"{scheme}://127.0.0.1:{server.server_address[1]}"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    return free_port()


def silent_server() -> tuple[socket.socket, int]:
    """A socket that accepts connections and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s, s.getsockname()[1]


def self_signed(folder: Path, names: list[str]) -> tuple[Path, Path]:
    """A self-signed certificate (and key) valid for `names` (DNS names or IP addresses), made with cryptography."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


@dataclass
class EarlyRefusal:
    """A server that answers an upload with 413 as soon as it has the request's headers, then either reads and drops
    the body (`keeps_reading`, as gunicorn does on a kept-alive connection) or closes at once (unread bytes: a
    reset). `received` counts the body bytes it read before it stopped."""

    url: str
    received: int = 0
    done: threading.Event = field(default_factory=threading.Event)


def early_refusal(tls: ssl.SSLContext | None, keeps_reading: bool) -> EarlyRefusal:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    refusal = EarlyRefusal(f"{'https' if tls else 'http'}://127.0.0.1:{port}")
    body = json.dumps({"error": "too large", "detail": "the upload is over the limit", "field": None}).encode()

    def serve_one() -> None:
        conn, _ = listener.accept()
        listener.close()
        if tls is not None:
            conn = tls.wrap_socket(conn, server_side=True)
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(65536)
        refusal.received = len(head.split(b"\r\n\r\n", 1)[1])
        conn.sendall(
            b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        if keeps_reading:
            conn.settimeout(5)
            try:
                while data := conn.recv(65536):
                    refusal.received += len(data)
            except OSError:
                pass
        conn.close()
        refusal.done.set()

    threading.Thread(target=serve_one, name="early-refusal", daemon=True).start()
    return refusal
