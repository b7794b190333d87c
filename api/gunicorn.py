"""gunicorn settings from cluster.toml: `gunicorn -c python:pvc.api.gunicorn 'pvc.api:create_app()'`.

HTTPS by default: with the certificate formation issued from the cluster CA (PVC_API_TLS_CERT / PVC_API_TLS_KEY,
set by the unit), else cluster.toml's [api] tls_cert_file / tls_key_file; plain HTTP only with [api] insecure_http.
It listens on the node's own addresses (pvc.config.resolve.api_addresses: loopback, the upstream and cluster IPs,
the floating IPs), never 0.0.0.0; PVC_NODE names the node, PVC_API_BIND ("HOST:PORT,...") overrides the list. The
floating IPs are bound before this node holds them: the sockets are made here with IP_FREEBIND (no sysctl, which a
container cannot set) and handed to gunicorn as fd://N.
With PVC_API_USER, the master stays root and the workers, which serve every request, run as that user.
"""

from __future__ import annotations

import os
import pwd
import socket

from pvc.api.context import ConfigError, from_environment
from pvc.config.load import resolve_file
from pvc.config.resolve import api_addresses

try:  # the context is built here, in the master, once (pvc.api.startup: the join key never enters this process)
    _ctx = from_environment()
except (ConfigError, ValueError) as exc:  # secrets files too: a worker would only show a traceback
    raise SystemExit(f"pvc-api: {exc}") from None
_api = _ctx.cfg.api


IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux: bind an address the host does not hold (yet)


def _freebind(address: str, port: int) -> str:
    """A socket bound to `address`:`port` even while no interface has the address, as gunicorn's fd://N."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"pvc-api: cannot listen on {address}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return f"fd://{sock.detach()}"


def _bind() -> list[str]:
    if os.environ.get("PVC_API_BIND"):
        return [b.strip() for b in os.environ["PVC_API_BIND"].split(",") if b.strip()]
    name = os.environ.get("PVC_NODE")
    if not name:
        raise SystemExit("pvc-api: PVC_NODE (this node's name in cluster.toml) or PVC_API_BIND is needed")
    try:
        node = _ctx.cfg.node(name)
    except KeyError:
        raise SystemExit(f"pvc-api: PVC_NODE={name} is not a node of cluster.toml") from None
    return [_freebind(ip, _api.port) for ip in api_addresses(_ctx.cfg, node)]


def _tls() -> tuple[str, str] | None:
    if _api.insecure_http:
        return None
    if os.environ.get("PVC_API_TLS_CERT") and os.environ.get("PVC_API_TLS_KEY"):
        return os.environ["PVC_API_TLS_CERT"], os.environ["PVC_API_TLS_KEY"]
    if _api.tls_cert_file and _api.tls_key_file:
        return str(resolve_file(_api.tls_cert_file, _ctx.base_dir)), str(resolve_file(_api.tls_key_file, _ctx.base_dir))
    raise SystemExit(
        "pvc-api: the API serves HTTPS, and no certificate is given: formation issues one from the cluster CA "
        "(PVC_API_TLS_CERT, PVC_API_TLS_KEY); or set [api] tls_cert_file and tls_key_file, or insecure_http = true"
    )


bind = _bind()
workers = int(os.environ.get("PVC_API_WORKERS", _api.workers))
threads = int(os.environ.get("PVC_API_THREADS", "4"))
# gthread workers report to the arbiter from their main loop, not from the threads serving requests, so a long
# upload or download is never cut off; `timeout` only replaces a worker whose main loop hangs. (A sync worker,
# which threads = 1 would otherwise pick, is killed by `timeout` in the middle of a long request.)
worker_class = "gthread"
timeout = 30
graceful_timeout = 10
accesslog = "-"
if (_files := _tls()) is not None:
    certfile, keyfile = _files
if os.environ.get("PVC_API_USER"):  # the workers' user and its own group (never root's)
    try:
        _account = pwd.getpwnam(os.environ["PVC_API_USER"])
    except KeyError:
        raise SystemExit(f"pvc-api: no user {os.environ['PVC_API_USER']!r} (PVC_API_USER) on this system") from None
    user, group = _account.pw_uid, _account.pw_gid
