"""A small JSON client for the PVC API on urllib (standard library: it loads fast and needs nothing installed).

Every failure becomes an ApiError with one line that says what to do: the API is unreachable, the key is wrong,
TLS failed, or the API refused the request (`error: detail (field: x)`, from its JSON error body).
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from select import select as select_sockets
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import click

from pvc.cli.errors import Failure
from pvc.cli.profiles import Connection, select

API_PREFIX = "/api/v1"  # pvc.config.schema.API_PREFIX, restated: that module would load pydantic at start-up
KEY_HEADER = "X-Api-Key"
TIMEOUT = 30.0
UPLOAD_CHUNK = 64 * 1024
T = TypeVar("T")


class ApiError(Failure):
    """A request failed. `status` is the HTTP status when the API answered, else None."""

    def __init__(self, message: str, status: int | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


class Unreachable(ApiError):
    """No HTTP answer at all: refused, unresolvable, timed out, TLS failure."""


def path(*segments: str) -> str:
    """A URL path from segments, each quoted (a VM name may hold characters a URL may not)."""
    return "".join("/" + quote(s, safe="") for s in segments)


def _read_all(resp: http.client.HTTPResponse) -> bytes:
    return resp.read()


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def _send_body(conn: http.client.HTTPConnection, source: Any, timeout: float) -> bytes:
    """Send `source` as the body until it ends or the API answers first; the start of an early answer (b"": none)."""
    while chunk := source.read(UPLOAD_CHUNK):
        early = _early_answer(conn.sock, timeout)
        if early is not None:
            return early
        try:
            conn.send(chunk)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return b""  # the API answered and closed the connection: its answer waits to be read
    return b""


def _early_answer(sock: socket.socket, timeout: float) -> bytes | None:
    """Bytes the API sent while the body was still going out (the start of its answer), or None."""
    if not select_sockets([sock], [], [], 0)[0]:
        return None
    sock.settimeout(0)
    try:
        return sock.recv(65536)  # b"": the API closed the connection
    except (ssl.SSLWantReadError, BlockingIOError):
        return None  # TLS housekeeping (a session ticket), not an answer
    finally:
        sock.settimeout(timeout)


def _response(conn: http.client.HTTPConnection, early: bytes) -> http.client.HTTPResponse:
    """The answer on `conn`, whose first bytes `early` may have been read already."""
    if not early:
        return conn.getresponse()
    # (ignored: HTTPResponse only calls the socket's makefile(), which _Prefixed provides)
    resp = http.client.HTTPResponse(_Prefixed(early, conn.sock), method="PUT")  # type: ignore[arg-type]
    resp.begin()
    return resp


class _Prefixed:
    """A socket as http.client reads it (makefile), with bytes already received in front."""

    def __init__(self, prefix: bytes, sock: socket.socket) -> None:
        self.prefix, self.sock = prefix, sock

    def makefile(self, mode: str) -> io.BufferedReader:
        rest = self.sock.makefile("rb")
        return io.BufferedReader(_Chain(self.prefix, rest))


class _Chain(io.RawIOBase):
    def __init__(self, prefix: bytes, rest: Any) -> None:
        self.prefix, self.rest = prefix, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self.prefix:
            n = min(len(buf), len(self.prefix))
            buf[:n], self.prefix = self.prefix[:n], self.prefix[n:]
            return n
        data = self.rest.read1(len(buf))
        buf[: len(data)] = data
        return len(data)


class Client:
    def __init__(self, conn: Connection, insecure: bool = False, timeout: float = TIMEOUT) -> None:
        self.conn = conn
        self.base = conn.url.rstrip("/")
        self.timeout = timeout
        self.verify = conn.verify and not insecure
        self._opener: urllib.request.OpenerDirector | None = None

    # -- requests --------------------------------------------------------------------------------------------
    def get(self, route: str, **query: object) -> Any:
        return self.request("GET", route, query=query)

    def post(self, route: str, body: object) -> Any:
        return self.request("POST", route, body=body)

    def put(self, route: str, body: object) -> Any:
        return self.request("PUT", route, body=body)

    def patch(self, route: str, body: object) -> Any:
        return self.request("PATCH", route, body=body)

    def delete(self, route: str) -> Any:
        return self.request("DELETE", route)

    def request(self, method: str, route: str, body: object = None, query: dict[str, object] | None = None) -> Any:
        """Send one request to `{url}/api/v1{route}`; the decoded JSON answer, or ApiError."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        return self._json(self._send(method, route, query, data, headers, self.timeout, _read_all))

    def upload(
        self, route: str, source: Any, length: int, query: dict[str, object] | None = None, timeout: float = 3600
    ) -> Any:
        """PUT `length` bytes read from the file object `source` (raw body); the decoded JSON answer.

        The body goes out in pieces, and an answer the API gives before it has them all (a refusal: 413 over the
        upload limit) is read at once instead of sending the rest, which the API would not read."""
        url = self._url(route, query)
        parts = urlsplit(url)
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=timeout, context=self.tls_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
        headers = {
            **self._headers(),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(length),
            "Accept": "application/json",
        }  # no "Connection: close": gunicorn then reads what was sent after an early answer, so it reaches us
        try:
            conn.putrequest("PUT", urlunsplit(("", "", parts.path, parts.query, "")), skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            early = _send_body(conn, source, timeout)
            resp = _response(conn, early)
            payload = resp.read()
        except (http.client.HTTPException, OSError) as exc:
            raise self.unreachable(exc) from None
        finally:
            conn.close()
        if resp.status >= 400:
            raise self.refused(urllib.error.HTTPError(url, resp.status, resp.reason, resp.headers, io.BytesIO(payload)))
        return self._json(payload)

    def download(self, route: str, sink: Any, query: dict[str, object] | None = None, timeout: float = 3600) -> int:
        """GET a raw body into `sink` (a callable taking each chunk, after a first call with the total size as
        an int, or None when unknown); returns the number of bytes."""

        def read(resp: http.client.HTTPResponse) -> int:
            size = resp.headers.get("Content-Length")
            sink(int(size) if size else None)
            total = 0
            while chunk := resp.read(1024 * 1024):
                sink(chunk)
                total += len(chunk)
            return total

        return self._send("GET", route, query, None, {}, timeout, read)

    def _send(
        self,
        method: str,
        route: str,
        query: dict[str, object] | None,
        data: Any,
        headers: dict[str, str],
        timeout: float,
        read: Callable[[http.client.HTTPResponse], T],
    ) -> T:
        """Send one request to `{url}/api/v1{route}` and `read` the answer; every failure becomes an ApiError."""
        url = self._url(route, query)
        headers = {**headers, **self._headers()}
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self.opener().open(req, timeout=timeout) as resp:
                return read(resp)
        except urllib.error.HTTPError as exc:
            raise self.refused(exc) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            raise self.unreachable(reason if isinstance(reason, BaseException) else OSError(str(reason))) from None
        except (http.client.HTTPException, OSError) as exc:
            raise self.unreachable(exc) from None

    def _url(self, route: str, query: dict[str, object] | None) -> str:
        url = self.base + API_PREFIX + route
        params = {k: v for k, v in (query or {}).items() if v is not None}
        return url + ("?" + urlencode(params) if params else "")

    def _headers(self) -> dict[str, str]:
        return {"User-Agent": "pvc-cli", **({KEY_HEADER: self.conn.key} if self.conn.key else {})}

    def _json(self, payload: bytes) -> Any:
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError:
            raise ApiError(f"the server at {self.base} did not answer with JSON: is it a PVC API?") from None

    def opener(self) -> urllib.request.OpenerDirector:
        if self._opener is None:
            handlers: list[urllib.request.BaseHandler] = []
            if self.base.startswith("https:"):
                handlers.append(urllib.request.HTTPSHandler(context=self.tls_context()))
            self._opener = urllib.request.build_opener(*handlers)
        return self._opener

    def tls_context(self) -> ssl.SSLContext:
        if not self.verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        if self.conn.ca_file:
            try:
                return ssl.create_default_context(cafile=self.conn.ca_file)
            except (OSError, ssl.SSLError) as exc:
                why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
                raise ApiError(
                    f"cannot use the CA file {self.conn.ca_file} of connection '{self.conn.name}': {why}"
                ) from None
        return ssl.create_default_context()

    # -- failures --------------------------------------------------------------------------------------------
    def refused(self, exc: urllib.error.HTTPError) -> ApiError:
        """The API answered with an error status: its JSON body says why."""
        status = exc.code
        try:
            raw = exc.read()
        except (OSError, http.client.HTTPException):
            raw = b""
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not (isinstance(data, dict) and isinstance(data.get("error"), str)):
            text = " ".join(raw.decode(errors="replace").split())[:200]
            return ApiError(
                f"the server at {self.base} answered {status} {exc.reason}" + (f": {text}" if text else ""),
                status,
            )
        error, detail, field = data["error"], str(data.get("detail") or ""), data.get("field")
        if status == 401:
            if not self.conn.key:
                return ApiError(
                    f"connection '{self.conn.name}' has no API key and the API requires one (401): "
                    f"add it with `pvc connection add {self.conn.name} ... --key KEY --replace`",
                    status,
                    error,
                )
            return ApiError(f"the API rejected the key of connection '{self.conn.name}' (401): {detail}", status, error)
        head, *rest = detail.splitlines() or [""]  # a refused domain XML: one refused part per further line
        message = f"{error}: {head}" if head else error
        if field:
            message += f" (field: {field})"
        message += "".join(f"\n  {line}" for line in rest)
        return ApiError(message, status, error)

    def unreachable(self, exc: BaseException) -> Unreachable:
        """No HTTP answer: say which address, and why, in words."""
        where = self.base
        if isinstance(exc, ssl.SSLCertVerificationError):
            why = exc.verify_message or exc.reason or "the certificate is not trusted"
            return Unreachable(
                f"TLS error talking to {where}: certificate verify failed: {why} (give the cluster's CA with "
                f"`pvc connection add {self.conn.name} ... --ca-file FILE --replace`, or pass --insecure)"
            )
        if isinstance(exc, ssl.SSLError):
            reason = exc.reason or str(exc)
            hint = ""
            if reason in ("WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING", "RECORD_LAYER_FAILURE"):
                hint = " (does the API serve plain http? add the connection with --no-tls)"
            return Unreachable(f"TLS error talking to {where}: {reason.lower().replace('_', ' ')}{hint}")
        if isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError):
            hint = " (does it expect https? add the connection with --tls)" if where.startswith("http:") else ""
            return Unreachable(f"the API at {where} closed the connection without answering{hint}")
        if isinstance(exc, http.client.HTTPException):
            hint = " (does it expect https? add the connection with --tls)" if where.startswith("http:") else ""
            return Unreachable(f"the server at {where} did not answer with HTTP{hint}")
        if isinstance(exc, socket.gaierror):
            host = urlsplit(where).hostname
            return Unreachable(
                f"cannot reach the API at {where}: cannot resolve '{host}': {_lower_first(exc.strerror or str(exc))}"
            )
        if isinstance(exc, TimeoutError):
            hint = (
                " (if the API serves plain http, add the connection with --no-tls)"
                if where.startswith("https:")
                else ""
            )
            return Unreachable(f"cannot reach the API at {where}: no answer within {self.timeout:g} s{hint}")
        if isinstance(exc, OSError) and exc.strerror:
            return Unreachable(f"cannot reach the API at {where}: {_lower_first(exc.strerror)}")
        return Unreachable(f"cannot reach the API at {where}: {_lower_first(str(exc)) or type(exc).__name__}")


def from_context(ctx: click.Context | None = None, timeout: float = TIMEOUT) -> Client:
    """The client for the connection the command line chose (-c/--connection, $PVC_CONNECTION, the default)."""
    root = (ctx or click.get_current_context()).find_root().params
    return Client(select(root.get("connection")), insecure=bool(root.get("insecure")), timeout=timeout)
