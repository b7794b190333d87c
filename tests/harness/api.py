"""The API under a real gunicorn, against a real ZooKeeper: the one way tests and benches start an API server.

    with ApiServer.running(workdir, config, zk_hosts, port) as api:   # answers /health when the block starts
        api.call("GET", "/api/v1/cluster", key=...)

`seed_formed_cluster()` writes what a formed cluster has in ZooKeeper before any pvcd runs (schema, registered
nodes with keepalives), for an API with no node daemons behind it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient

from pvc.config.load import load
from pvc.config.pki import api_pki, ca_pem
from pvc.config.schema import API_PREFIX
from pvc.config.secrets import ZK_USER, read_join_key, zookeeper_password
from pvc.nodeos.state import layout
from pvc.nodeos.state.migrations import ensure_schema
from pvc.nodeos.state.models import Keepalive, NetworkRecord, NodeRecord
from pvc.nodeos.state.store import ClusterState, make_client
from tests.harness.procs import Proc, port_free, wait_until

VENV_BIN = Path(sys.executable).parent


class ApiServer:
    def __init__(
        self,
        workdir: Path,
        config: Path,
        zk_hosts: str,
        port: int,
        workers: int = 2,
        env: dict[str, str] | None = None,
    ) -> None:
        """HTTPS as on a node, unless the config says `insecure_http`: with a certificate of the cluster CA for the
        config's first node (issued here, as formation issues it), verified against that CA; or with the
        config's own tls_cert_file (not verified here)."""
        port_free(port)
        self.port = port
        self.config = config
        self.key: str | None = None  # set by whoever knows the cluster's join key
        self.state: ClusterState | None = None
        self.ca_pem: str | None = None  # the cluster CA the API's certificate is verified against
        self._context: ssl.SSLContext | None = None
        cfg = load(config).config
        assert cfg is not None, f"{config} is not valid"
        tls_env: dict[str, str] = {}
        if not cfg.api.insecure_http:
            if cfg.api.tls_cert_file is None:
                join_key = read_join_key(cfg, config.parent)
                issued = api_pki(join_key, cfg, cfg.nodes[0])
                folder = workdir / "api-tls"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "cert.pem").write_text(issued.cert_pem)
                (folder / "key.pem").write_text(issued.key_pem)
                (folder / "key.pem").chmod(0o600)
                tls_env = {"PVC_API_TLS_CERT": str(folder / "cert.pem"), "PVC_API_TLS_KEY": str(folder / "key.pem")}
                self.ca_pem = ca_pem(join_key, cfg)
                self._context = ssl.create_default_context(cadata=self.ca_pem)
            else:
                self._context = ssl.create_default_context()
                self._context.check_hostname, self._context.verify_mode = False, ssl.CERT_NONE
        self.url = f"{'https' if self._context else 'http'}://127.0.0.1:{port}"
        self.spool = workdir / "upload-spool"  # where qcow2/VMDK uploads are spooled (PVCDATA's on a node)
        env = {
            **os.environ,
            "PVC_CONFIG": str(config),
            "PVC_ZOOKEEPER": zk_hosts,
            "PVC_API_BIND": f"127.0.0.1:{port}",
            "PVC_API_WORKERS": str(workers),
            "PVC_UPLOAD_SPOOL": str(self.spool),
            **tls_env,
            **(env or {}),
        }
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = Proc(
            "gunicorn",
            [str(VENV_BIN / "gunicorn"), "-c", "python:pvc.api.gunicorn", "pvc.api:create_app()"],
            workdir / "gunicorn.log",
            env=env,
        )

    @classmethod
    @contextlib.contextmanager
    def running(cls, *args: object, **kwargs: object) -> Iterator[ApiServer]:
        """Start the API (arguments as for the constructor), wait until it answers, and stop it afterwards."""
        server = cls(*args, **kwargs)  # type: ignore[arg-type]  # the constructor's own arguments, passed through
        try:
            server.wait_ready()
            yield server
        finally:
            server.stop()

    def wait_ready(self, timeout: float = 60) -> None:
        def up() -> bool:
            status, _ = self.call("GET", f"{API_PREFIX}/health")
            return status == 200

        wait_until("the API to answer /health with 200", up, timeout, interval=0.2, proc=self.proc)

    def call(
        self,
        method: str,
        path: str,
        body: object = None,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        source: str | None = None,
    ) -> tuple[int, Any]:
        """One request; (status, the decoded JSON or the text). `source`: the client's address (127.0.0.x), for
        tests that must not meet the limit on failed authentications of 127.0.0.1."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        sent = {**(headers or {})}
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        if key:
            sent["X-Api-Key"] = key
        bind = (source, 0) if source else None
        if self._context is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=330, context=self._context, source_address=bind
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=330, source_address=bind)
        try:
            conn.request(method, path, body=data, headers=sent)
            resp = conn.getresponse()
            payload, status, ctype = resp.read(), resp.status, resp.headers.get("Content-Type", "")
        finally:
            conn.close()
        if "json" in ctype:
            return status, json.loads(payload or b"null")
        return status, payload.decode(errors="replace")

    def headers_only(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, object]:
        """Send a request's headers and none of the body they announce; the answer, which must come without the
        body (http.client raises TimeoutError after 10 s otherwise)."""
        conn = self._connection(10)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            return _answer(conn.getresponse())
        finally:
            conn.close()

    def chunked(self, method: str, path: str, chunks: Iterator[bytes], key: str | None = None) -> tuple[int, object]:
        """A request whose body is sent chunked (no Content-Length): `chunks`, as they come."""
        conn = self._connection(330)
        try:
            conn.request(method, path, body=chunks, headers={"X-Api-Key": key or ""}, encode_chunked=True)
            return _answer(conn.getresponse())
        finally:
            conn.close()

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._context is not None:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=self._context)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def stop(self) -> None:
        self.proc.stop(timeout=10)


def _answer(resp: http.client.HTTPResponse) -> tuple[int, object]:
    payload = resp.read()
    if "json" in resp.headers.get("Content-Type", ""):
        return resp.status, json.loads(payload or b"null")
    return resp.status, payload.decode(errors="replace")


def seed_formed_cluster(
    zk_hosts: str, join_key: str, nodes: list[str], mem_total: int = 8192, mem_free: list[int] | None = None
) -> tuple[KazooClient, ClusterState]:
    """A clean /pvc with the schema and `nodes` registered (coordinators, daemon running, with keepalives), as a
    formed cluster has it. Returns the client (the caller stops it) and the state over it."""
    zk = make_client(zk_hosts, user=ZK_USER, password=zookeeper_password(join_key), timeout=5)
    zk.start(timeout=10)
    with contextlib.suppress(Exception):
        zk.delete(layout.ROOT, recursive=True)
    state = ClusterState(zk)
    ensure_schema(state, join_key)
    for i, name in enumerate(nodes):
        free = mem_free[i] if mem_free else mem_total // 2
        state.put(layout.node(name), NodeRecord(name=name, coordinator=True, daemon_state="run"))
        state.write_keepalive(name, Keepalive(mem_total=mem_total, mem_free=free, cpus=4))
    return zk, state


def ensure_network(state: ClusterState, vni: int = 100) -> NetworkRecord:
    """A managed network with this VNI in ZooKeeper (created if missing): what a VM's NIC on it needs."""
    from pvc.nodeos.state.store import Conflict, NotFound

    try:
        return state.network(vni)
    except NotFound:
        pass
    record = NetworkRecord(
        vni=vni,
        name=f"net{vni}",
        type="managed",
        owner="api",
        mtu=1450,
        subnet=f"10.{vni % 250}.{vni // 250 % 250}.0/24",
        gateway=f"10.{vni % 250}.{vni // 250 % 250}.1",
    )
    with contextlib.suppress(Conflict):  # made meanwhile
        state.create_network(record)
    return state.network(vni)


@contextlib.contextmanager
def networks(state: ClusterState, *vnis: int) -> Iterator[None]:
    """Managed networks with these VNIs for the block (`ensure_network`); the ones it made are removed after it."""
    made = [vni for vni in vnis if vni not in state.network_vnis()]
    for vni in vnis:
        ensure_network(state, vni)
    try:
        yield
    finally:
        for vni in made:
            with contextlib.suppress(Exception):
                state.remove_network(vni)
