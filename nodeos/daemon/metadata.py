"""The metadata service's listeners: on the primary, one HTTP listener per managed network's bridge, bound to
169.254.169.254:80 on that bridge alone (SO_BINDTODEVICE), so nothing from the cluster network or the upstream
reaches it (docs/networks.md, "Metadata service"). The network controller puts the address on the bridges and starts
and stops the listeners with the primary role (`converge`).

A request's caller is its NIC: the source address -> the bridge's neighbour (ARP) entry, which the kernel made
when it answered the connection -> the MAC -> the VM whose NIC on this network holds it (the MAC index in
ZooKeeper) -> the VM's seed record. No DHCP lease is read, so static addresses work too. The service only reads
ZooKeeper and the neighbour table; the answers are pvc.nodeos.clientnet.metadata's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pyroute2 import IPRoute

from pvc.nodeos.clientnet import metadata
from pvc.nodeos.state.store import ClusterState, NotFound

log = logging.getLogger(__name__)

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # bind before the address is on the bridge (linux/in.h)
REQUEST_SECONDS = 10.0  # a connection is cut this long after it was accepted, whatever it is doing
MAX_REQUESTS = 32  # requests handled at once per bridge; more connections are closed at once (no thread each)
MAX_PER_SOURCE = 4  # of those, at once from one address: one VM cannot hold every slot of its network
POLL_SECONDS = 0.1  # how soon a listener ends once stopped (a step-down waits for it)


def _cut(request: socket.socket) -> None:
    with contextlib.suppress(OSError):
        request.shutdown(socket.SHUT_RDWR)  # the handler's read or write returns at once


def neighbour_mac(bridge: str, address: str) -> str | None:
    """The MAC of `address` in the neighbour table of `bridge` (lower-case), if the kernel has one."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=bridge)
        if not found:
            return None
        for entry in ipr.get_neighbours(family=socket.AF_INET, ifindex=found[0], dst=address):
            mac = entry.get_attr("NDA_LLADDR")
            if mac and entry.get_attr("NDA_DST") == address:
                return str(mac).lower()
    return None


def identify(state: ClusterState, vni: int, mac: str, address: str) -> metadata.Instance | None:
    """The VM one of whose NICs on network `vni` holds `mac`, with its seed record."""
    uuid = state.mac_holder(mac)
    if uuid is None:
        return None
    try:
        spec = state.vm(uuid)
    except NotFound:  # removed meanwhile
        return None
    if spec.definition is None:
        return None
    if not any(nic.mac == mac and nic.network == vni for nic in spec.definition.nics):
        return None
    return metadata.Instance(uuid=uuid, name=spec.name, local_ipv4=address, seed=state.vm_seed(uuid))


class Handler(BaseHTTPRequestHandler):
    server: Listener
    server_version = "pvc-metadata"
    sys_version = ""
    protocol_version = "HTTP/1.0"
    timeout = REQUEST_SECONDS

    def do_GET(self) -> None:
        self._reply(body=True)

    def do_HEAD(self) -> None:
        self._reply(body=False)

    def do_PUT(self) -> None:  # cloud-init's Ec2 asks for an IMDSv2 token first; without one it reads as IMDSv1
        self._send(metadata.NOT_FOUND, body=True)

    do_POST = do_DELETE = do_PUT

    def _reply(self, body: bool) -> None:
        address = self.client_address[0]
        try:
            inst = self.server.lookup(address)
        except Exception as exc:  # ZooKeeper away: the caller retries
            log.warning("metadata: cannot identify %s on %s: %s", address, self.server.bridge, exc)
            self._send(metadata.Answer(503, "the cluster state is not readable now; try again\n"), body)
            return
        self._send(metadata.answer(self.path, inst), body)

    def _send(self, answer: metadata.Answer, body: bool) -> None:
        data = answer.body.encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metadata %s %s: " + format, self.server.bridge, self.client_address[0], *args)


class Listener(ThreadingHTTPServer):
    """169.254.169.254:`port` on one bridge only."""

    daemon_threads = True
    block_on_close = False  # a stop (a step-down) never waits for a slow client
    request_queue_size = 2 * MAX_REQUESTS  # the accept backlog: VMs booting together are not made to retry a SYN
    allow_reuse_address = True

    def __init__(self, state: ClusterState, bridge: str, vni: int, port: int) -> None:
        self.state, self.bridge, self.vni = state, bridge, vni
        self.deadline = REQUEST_SECONDS
        self.slots = threading.BoundedSemaphore(MAX_REQUESTS)
        self.sources: dict[str, int] = {}  # address -> its connections being served
        self.sources_lock = threading.Lock()
        super().__init__((metadata.ADDRESS, port), Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per request, up to MAX_REQUESTS (MAX_PER_SOURCE from one address): a VM opening connections
        cannot exhaust pvcd's threads, nor its network's slots."""
        source = client_address[0]
        with self.sources_lock:
            taken = self.sources.get(source, 0) >= MAX_PER_SOURCE or not self.slots.acquire(blocking=False)
            if not taken:
                self.sources[source] = self.sources.get(source, 0) + 1
        if taken:
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(source)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, cut at its deadline (a client trickling bytes never holds a slot longer)."""
        cut = threading.Timer(self.deadline, _cut, (request,))
        cut.daemon = True
        cut.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            cut.cancel()
            self._release(client_address[0])

    def _release(self, source: str) -> None:
        with self.sources_lock:
            left = self.sources.pop(source, 1) - 1
            if left:
                self.sources[source] = left
            self.slots.release()

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.bridge.encode())
        self.socket.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        super().server_bind()

    def lookup(self, address: str) -> metadata.Instance | None:
        mac = neighbour_mac(self.bridge, address)
        return identify(self.state, self.vni, mac, address) if mac else None


class MetadataService:
    """The listeners, one per managed bridge while this node is the primary."""

    def __init__(self, state: ClusterState, port: int = metadata.PORT) -> None:
        self.state, self.port = state, port
        self.listeners: dict[str, Listener] = {}

    def converge(self, bridges: dict[str, int]) -> list[str]:
        """Listen on exactly `bridges` (bridge name -> VNI). Returns the changes."""
        changes = []
        for bridge in sorted(set(self.listeners) - set(bridges)):
            self._close(self.listeners.pop(bridge))
            changes.append(f"stopped the metadata service on {bridge}")
        for bridge, vni in sorted(bridges.items()):
            if bridge in self.listeners:
                continue
            try:
                listener = Listener(self.state, bridge, vni, self.port)
            except OSError as exc:
                log.error("metadata: cannot listen on %s:%d on %s: %s", metadata.ADDRESS, self.port, bridge, exc)
                continue
            self.listeners[bridge] = listener
            serve = functools.partial(listener.serve_forever, poll_interval=POLL_SECONDS)
            threading.Thread(target=serve, name=f"metadata-{bridge}", daemon=True).start()
            changes.append(f"metadata service on {bridge} ({metadata.ADDRESS}:{self.port})")
        return changes

    def stop(self) -> None:
        for listener in self.listeners.values():
            self._close(listener)
        self.listeners.clear()

    @staticmethod
    def _close(listener: Listener) -> None:
        with contextlib.suppress(Exception):
            listener.shutdown()
        listener.server_close()
