"""Coordinator election (kazoo's Election recipe). The primary holds the floating IPs and runs the fencer.

Failover is driven by ZooKeeper sessions: when the primary's pvcd stops answering, its session expires after
zookeeper.session_timeout_ms, its election node vanishes, and the next coordinator in line takes over. A primary
that loses its own connection drops the floating IPs at once, before anyone else can take them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING

from kazoo.exceptions import KazooException
from kazoo.protocol.states import KazooState

from pvc.nodeos import netif

if TYPE_CHECKING:
    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)


class Election:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.me = daemon.node.name
        self.is_primary = threading.Event()
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="election", daemon=True)

    def start(self) -> None:
        self.d.zk.add_listener(self._listener)
        if self.d.zk.state == KazooState.CONNECTED:
            self.connected.set()
        # Addresses left over from a crashed run of this daemon must not linger next to the real primary's.
        self._drop_floating_ips()
        self.thread.start()

    def _listener(self, state: KazooState) -> None:
        if state == KazooState.CONNECTED:
            self.connected.set()
        else:
            self.connected.clear()

    def _yield_to(self) -> str | None:
        """The coordinator an administrator asked to be primary, if it is another running coordinator."""
        try:
            wanted = self.d.state.primary_request()
            if wanted in (None, self.me):
                return None
            return wanted if self.d.state.node(wanted).daemon_state == "run" else None
        except Exception:
            return None

    def _loop(self) -> None:
        while not self.d.stopping.is_set():
            if not self.connected.wait(timeout=0.5):
                continue
            wanted = self._yield_to()
            if wanted is not None and self.d.state.primary() != wanted:
                # let the requested coordinator win this round
                self.d.stopping.wait(2.0)
                if self._yield_to() is not None and self.d.state.primary() != wanted:
                    continue
            election = self.d.state.election(self.me)
            try:
                election.run(self._lead)
            except KazooException as exc:
                log.info("election interrupted: %s", exc)
            except Exception:
                log.exception("election failed")
            with contextlib.suppress(Exception):
                election.cancel()
            self.d.stopping.wait(0.2)

    def _lead(self) -> None:
        log.warning("this node is now the primary coordinator")
        self.is_primary.set()
        try:
            for device, address, prefix in netif.floating_ips(self.d.cfg):
                netif.add_address(device, address, prefix)
            self.d.state.claim_primary(self.me)
            self.d.networks.take_over()  # gateways, dnsmasq, NAT of the managed networks
            if self.d.state.primary_request() == self.me:
                self.d.state.clear_primary_request()
            interval = self.d.cfg.timers.keepalive_interval
            while not self.d.stopping.is_set() and self.connected.is_set():
                if self._yield_to() is not None:
                    log.warning("stepping down: %s was asked to be primary", self.d.state.primary_request())
                    break
                try:
                    self.d.fencer.check(self.d.keepalive.zk_now_ms())
                except Exception:
                    log.exception("fencing pass failed")
                self.d.state.claim_primary(self.me)
                self.connected.wait(0)  # re-check quickly below
                self.d.stopping.wait(min(interval, 1.0))
        finally:
            self.is_primary.clear()
            self.d.networks.step_down()
            self._drop_floating_ips()
            log.warning("this node is no longer the primary coordinator")

    def _drop_floating_ips(self) -> None:
        for device, address, prefix in netif.floating_ips(self.d.cfg):
            netif.remove_address(device, address, prefix)

    def stop(self) -> None:
        self.thread.join(timeout=5)
