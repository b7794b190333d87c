"""The CLI's HTTP client against real servers on 127.0.0.1: every failure is one line that says what happened.

Through the client directly, and through the real `pvc` console script (exit status, one line on stderr, no
traceback). Servers: a closed port, a socket that never answers, a tiny http.server answering fixed JSON, and the
same over TLS with a self-signed certificate made with the `cryptography` library.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from pvc.cli.client import API_PREFIX, ApiError, Client, Unreachable, path
from pvc.cli.profiles import Connection
from pvc.config import schema
from tests.harness.http_stub import (
    Stub,
    closed_port,
    early_refusal,
    self_signed,
    serve,
    silent_server,
    tls_context,
)

PVC = Path(sys.executable).parent / "pvc"


def conn(url: str, key: str = "k3y", **kw: Any) -> Connection:
    return Connection(name="lab", url=url, key=key, **kw)


@pytest.fixture
def stub():
    s = Stub()
    server, url = serve(s)
    s.url = url
    yield s
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    good = self_signed(folder / "ip", ["127.0.0.1"])
    other = self_signed(folder / "name", ["api.example.invalid"])
    return {"ip": good, "name": other}


@pytest.fixture
def tls_stub(certs):
    s = Stub({("GET", "/api/v1/cluster"): (200, {"name": "tls"})})
    server, url = serve(s, tls_context(*certs["ip"]))
    s.url = url
    yield s
    server.shutdown()
    server.server_close()


def failure(client: Client, route: str = "/cluster") -> ApiError:
    with pytest.raises(ApiError) as info:
        client.get(route)
    return info.value


def pvc(client_dir: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PVC_CLIENT_DIR": str(client_dir)}
    env.pop("PVC_CONNECTION", None)
    return subprocess.run([str(PVC), *args], capture_output=True, text=True, env=env, timeout=timeout)


def add(client_dir: Path, name: str, url: str, *extra: str) -> None:
    res = pvc(client_dir, "connection", "add", name, "--address", url, "--key", "k3y", *extra)
    assert res.returncode == 0, res.stderr


def one_line(res: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


# -- successes ----------------------------------------------------------------------------------------------------


def test_sends_key_query_and_json_body_and_quotes_path(stub):
    stub.routes[("GET", "/api/v1/vms")] = (200, [])
    stub.routes[("POST", "/api/v1/vms/a%20b%2Fc/state")] = (200, {"ok": True})
    client = Client(conn(stub.url))
    assert client.get("/vms", node="n1", state=None) == []
    assert client.post(path("vms", "a b/c", "state"), {"action": "start"}) == {"ok": True}
    first, second = stub.seen
    assert first.path == "/api/v1/vms?node=n1" and first.headers["X-Api-Key"] == "k3y"
    assert json.loads(second.body) == {"action": "start"}
    assert second.headers["Content-Type"] == "application/json"


def test_upload_and_download_send_the_key_and_map_refusals(stub):
    stub.routes[("PUT", "/api/v1/storage/pools/p/volumes/v/data")] = (201, {"name": "v"})
    stub.routes[("GET", "/api/v1/storage/pools/p/volumes/v/data")] = (200, b"raw bytes")
    client = Client(conn(stub.url))
    assert client.upload("/storage/pools/p/volumes/v/data", io.BytesIO(b"disk"), 4, {"format": "raw"}) == {"name": "v"}
    put = stub.seen[-1]
    assert put.body == b"disk" and put.path.endswith("?format=raw") and put.headers["X-Api-Key"] == "k3y"
    assert put.headers["Content-Type"] == "application/octet-stream"
    got: list[object] = []
    assert client.download("/storage/pools/p/volumes/v/data", got.append) == 9
    assert got == [9, b"raw bytes"]
    with pytest.raises(ApiError, match=r"^not found: no route /api/v1/storage/pools/p/volumes/w/data$"):
        client.download("/storage/pools/p/volumes/w/data", got.append)
    with pytest.raises(ApiError, match="did not answer with JSON"):
        stub.routes[("PUT", "/api/v1/storage/pools/p/volumes/v/data")] = (201, b"<html>")
        client.upload("/storage/pools/p/volumes/v/data", io.BytesIO(b"disk"), 4)


@pytest.mark.parametrize(
    "tls,keeps_reading", [(False, True), (True, True), (False, False)], ids=["http", "https", "http-closes"]
)
def test_an_upload_refused_early_is_not_sent_on(certs, tls, keeps_reading):
    """The API answers 413 on the headers alone: the client stops sending and shows the refusal. gunicorn keeps
    reading what the client sends after such an answer (the request did not ask to close), and the client sees the
    answer while it sends; a server that closes at once resets the connection, and over plain TCP the answer is
    still read after the failed write (over TLS that is not reliable: the answer may be lost to the reset)."""
    refusal = early_refusal(tls_context(*certs["ip"]) if tls else None, keeps_reading)
    client = Client(conn(refusal.url, ca_file=str(certs["ip"][0]) if tls else None))
    size = 512 * 1024**2  # never sent whole: it would take seconds, and the server stops reading
    with pytest.raises(ApiError, match=r"^too large: the upload is over the limit$") as err:
        client.upload("/storage/pools/p/volumes/v/data", io.BufferedReader(Zeros(size)), size)
    assert err.value.status == 413
    assert refusal.done.wait(10) and refusal.received < 64 * 1024**2


class Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n


def test_an_upload_over_tls_sends_everything(tls_stub, certs):
    tls_stub.routes[("PUT", "/api/v1/storage/pools/p/volumes/v/data")] = (201, {"name": "v"})
    data = os.urandom(3 * 1024**2 + 5)
    client = Client(conn(tls_stub.url, ca_file=str(certs["ip"][0])))
    assert client.upload("/storage/pools/p/volumes/v/data", io.BytesIO(data), len(data)) == {"name": "v"}
    assert tls_stub.seen[-1].body == data


def test_the_client_and_the_api_share_the_prefix():
    assert API_PREFIX == schema.API_PREFIX  # restated in the client to keep pydantic out of its start-up


def test_url_with_a_path_prefix(stub):
    stub.routes[("GET", "/pvc/api/v1/cluster")] = (200, {"name": "behind a proxy"})
    assert Client(conn(stub.url + "/pvc/")).get("/cluster") == {"name": "behind a proxy"}


# -- the API answered with an error --------------------------------------------------------------------------------


def test_401_names_the_connection_and_the_servers_detail(stub):
    stub.routes[("GET", "/api/v1/cluster")] = (
        401,
        {"error": "unauthorized", "detail": "the API key is not valid for this cluster", "field": None},
    )
    err = failure(Client(conn(stub.url)))
    assert err.status == 401
    assert (
        err.message == "the API rejected the key of connection 'lab' (401): the API key is not valid for this cluster"
    )


def test_401_without_a_key_says_to_add_one(stub):
    stub.routes[("GET", "/api/v1/cluster")] = (401, {"error": "unauthorized", "detail": "a key is required"})
    err = failure(Client(conn(stub.url, key="")))
    assert "X-Api-Key" not in stub.seen[0].headers
    assert err.message.startswith("connection 'lab' has no API key and the API requires one (401)")


def test_409_shows_error_and_detail(stub):
    detail = "cannot start a VM in state 'start' (allowed from: disable, fail, stop)"
    stub.routes[("GET", "/api/v1/cluster")] = (409, {"error": "conflict", "detail": detail, "field": None})
    err = failure(Client(conn(stub.url)))
    assert err.status == 409 and err.error == "conflict"
    assert err.message == f"conflict: {detail}"


def test_400_names_the_field(stub):
    stub.routes[("GET", "/api/v1/cluster")] = (
        400,
        {"error": "invalid request", "detail": "not well-formed XML", "field": "xml"},
    )
    assert failure(Client(conn(stub.url))).message == "invalid request: not well-formed XML (field: xml)"


def test_error_page_that_is_not_json(stub):
    stub.routes[("GET", "/api/v1/cluster")] = (502, b"<html><body>\n  Bad   gateway\n</body></html>")
    err = failure(Client(conn(stub.url)))
    assert err.status == 502
    assert err.message == f"the server at {stub.url} answered 502 Bad Gateway: <html><body> Bad gateway </body></html>"


def test_success_that_is_not_json(stub):
    stub.routes[("GET", "/api/v1/cluster")] = (200, b"<html>a web server</html>")
    assert failure(Client(conn(stub.url))).message == (
        f"the server at {stub.url} did not answer with JSON: is it a PVC API?"
    )


# -- no answer -------------------------------------------------------------------------------------------------------


def test_connection_refused():
    url = f"http://127.0.0.1:{closed_port()}"
    err = failure(Client(conn(url)))
    assert isinstance(err, Unreachable) and err.status is None
    assert err.message == f"cannot reach the API at {url}: connection refused"


def test_no_answer_within_the_timeout():
    sock, port = silent_server()
    try:
        err = failure(Client(conn(f"http://127.0.0.1:{port}"), timeout=0.5))
    finally:
        sock.close()
    assert err.message == f"cannot reach the API at http://127.0.0.1:{port}: no answer within 0.5 s"


def test_unresolvable_host():
    err = failure(Client(conn("http://no-such-host.invalid:7370")))
    assert err.message.startswith("cannot reach the API at http://no-such-host.invalid:7370: cannot resolve")


# -- TLS ---------------------------------------------------------------------------------------------------------------


def test_self_signed_certificate_fails_verification(tls_stub):
    err = failure(Client(conn(tls_stub.url)))
    assert isinstance(err, Unreachable)
    assert err.message.startswith(
        f"TLS error talking to {tls_stub.url}: certificate verify failed: self-signed certificate"
    )
    assert "--ca-file" in err.message and "--insecure" in err.message


def test_ca_file_and_insecure_both_work(tls_stub, certs):
    cert, _ = certs["ip"]
    assert Client(conn(tls_stub.url, ca_file=str(cert))).get("/cluster") == {"name": "tls"}
    assert Client(conn(tls_stub.url, verify=False)).get("/cluster") == {"name": "tls"}
    assert Client(conn(tls_stub.url), insecure=True).get("/cluster") == {"name": "tls"}


def test_certificate_for_another_name(certs):
    s = Stub({("GET", "/api/v1/cluster"): (200, {})})
    server, url = serve(s, tls_context(*certs["name"]))
    try:
        err = failure(Client(conn(url, ca_file=str(certs["name"][0]))))
    finally:
        server.shutdown()
        server.server_close()
    assert err.message.startswith(f"TLS error talking to {url}: certificate verify failed: IP address mismatch")


def test_unreadable_ca_file(tls_stub, tmp_path):
    missing = tmp_path / "nope.pem"
    err = failure(Client(conn(tls_stub.url, ca_file=str(missing))))
    assert err.message == f"cannot use the CA file {missing} of connection 'lab': No such file or directory"


def test_plain_http_to_a_tls_server(tls_stub):
    url = tls_stub.url.replace("https:", "http:")
    err = failure(Client(conn(url)))
    assert err.message.startswith(f"the API at {url} closed the connection without answering")
    assert "--tls" in err.message


def test_https_to_a_plain_http_server():
    sock, port = silent_server()

    def answer_plain_http() -> None:
        conn_, _ = sock.accept()
        conn_.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        conn_.close()

    thread = threading.Thread(target=answer_plain_http, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{port}"
    try:
        err = failure(Client(conn(url), timeout=5))
    finally:
        thread.join(5)
        sock.close()
    assert err.message == (
        f"TLS error talking to {url}: wrong version number (does the API serve plain http? "
        "add the connection with --no-tls)"
    )


def test_https_to_a_server_that_never_answers():
    sock, port = silent_server()
    url = f"https://127.0.0.1:{port}"
    try:
        err = failure(Client(conn(url), timeout=0.5))
    finally:
        sock.close()
    assert err.message == (
        f"cannot reach the API at {url}: no answer within 0.5 s "
        "(if the API serves plain http, add the connection with --no-tls)"
    )


# -- through the real console script ----------------------------------------------------------------------------------


def test_pvc_prints_one_line_and_exits_1(stub, tls_stub, tmp_path):
    stub.routes[("GET", "/api/v1/vms")] = (401, {"error": "unauthorized", "detail": "the API key is not valid"})
    stub.routes[("POST", "/api/v1/vms/web1/state")] = (
        409,
        {"error": "conflict", "detail": "cannot start a VM in state 'start'", "field": None},
    )
    add(tmp_path, "stub", stub.url)
    add(tmp_path, "tls", tls_stub.url)
    add(tmp_path, "down", f"http://127.0.0.1:{closed_port()}")

    res = pvc(tmp_path, "-c", "stub", "vm", "list")
    assert res.returncode == 1 and res.stdout == ""
    assert one_line(res) == "pvc: the API rejected the key of connection 'stub' (401): the API key is not valid"

    res = pvc(tmp_path, "-c", "stub", "vm", "start", "web1")
    assert res.returncode == 1 and one_line(res) == "pvc: conflict: cannot start a VM in state 'start'"

    res = pvc(tmp_path, "-c", "down", "cluster", "status")
    assert res.returncode == 1 and one_line(res).endswith(": connection refused")

    res = pvc(tmp_path, "-c", "tls", "cluster", "status")
    assert res.returncode == 1
    assert one_line(res).startswith(f"pvc: TLS error talking to {tls_stub.url}: certificate verify failed")

    res = pvc(tmp_path, "-c", "tls", "--insecure", "cluster", "status", "--format", "json")
    assert res.returncode == 0 and json.loads(res.stdout) == {"name": "tls"}


def test_usage_errors_exit_2(tmp_path):
    res = pvc(tmp_path, "vm", "list", "--format", "xml")
    assert res.returncode == 2 and "Invalid value for '--format'" in res.stderr
    res = pvc(tmp_path, "vm", "define")
    assert res.returncode == 2 and "give --name (and --memory), or --file" in res.stderr
