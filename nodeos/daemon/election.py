"""Coordinator election (kazoo's Election recipe). The primary holds the floating IPs and runs the fencer.

Failover is driven by ZooKeeper sessions: when the primary's pvcd stops answering, its session expires after
zookeeper.session_timeout_ms, its election node vanishes, and the next coordinator in line takes over. A primary
that loses its own connection drops the floating IPs at once, before anyone else can take them, and leaves the
election (deleting its contender znode, which its session may outlive) so that it cannot block the next round.

A primary whose own controllers stall (this thread, or the fencer: watchdog.Progress) steps down within
`timers.watchdog` seconds, before systemd's watchdog restarts it: it drops the floating IPs and deletes its
election and primary znodes, so another coordinator takes over at once; it does not stand again while a controller
is stalled.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING

from kazoo.exceptions import KazooException
from kazoo.protocol.states import KazooState

from pvc.nodeos import netif
from pvc.nodeos.daemon.watchdog import controller_thread

if TYPE_CHECKING:
    from kazoo.recipe.election import Election as KazooElection

    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)
PRIMARY_CONTROLLERS = ("election", "fencer")  # a primary steps down when one of these stalls
LEAD_PASS = 0.5  # seconds between two checks of a primary's term


class Election:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.me = daemon.node.name
        self.is_primary = threading.Event()
        self.connected = threading.Event()
        self.interrupted = threading.Event()  # the connection was lost since the term began (a reconnect keeps it)
        self.resigned = threading.Event()  # this term was given up from outside (check_stall)
        self.current: KazooElection | None = None
        self.thread = controller_thread("election", self._loop)

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
            self.interrupted.set()

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
        said_stalled = False
        while not self.d.stopping.is_set():
            self.d.progress.beat("election")
            if not self.connected.wait(timeout=0.5):
                continue
            stalled = self.d.progress.stalled(PRIMARY_CONTROLLERS)
            if stalled:
                if not said_stalled:
                    log.error("not standing for primary while %s stalled", _describe(stalled))
                said_stalled = True
                self.d.stopping.wait(1.0)
                continue
            said_stalled = False
            wanted = self._yield_to()
            if wanted is not None and self.d.state.primary() != wanted:
                # let the requested coordinator win this round
                self.d.stopping.wait(2.0)
                if self._yield_to() is not None and self.d.state.primary() != wanted:
                    continue
            election = self.d.state.election(self.me)
            self.current = election
            self.resigned.clear()
            self.d.progress.beat("election", allow=float("inf"))  # waiting in line is not a stall
            try:
                election.run(self._lead)
            except KazooException as exc:
                log.info("election interrupted: %s", exc)
            except Exception:
                log.exception("election failed")
            self.current = None
            self._leave(election)
            self.d.stopping.wait(0.2)

    def _lead(self) -> None:
        if self.resigned.is_set():
            return
        self.interrupted.clear()
        session = self.d.zk.client_id
        if not self.connected.is_set() or session is None:
            return
        log.warning("this node is now the primary coordinator")
        self.is_primary.set()
        try:
            for device, address, prefix in netif.floating_ips(self.d.cfg):
                netif.add_address(device, address, prefix)
            self.d.state.claim_primary(self.me)
            self.d.networks.take_over()  # gateways, dnsmasq, NAT of the managed networks
            # the term starts now, on ZooKeeper's clock: no node is judged dead before a full window from here
            self.d.fencer.begin_term(self.d.state.stamp_primary(self.me))
            self.d.state.clear_fault(f"primary-stalled-{self.me}")
            if self.d.state.primary_request() == self.me:
                self.d.state.clear_primary_request()
            while not (self.d.stopping.is_set() or self.interrupted.is_set() or self.resigned.is_set()):
                if self.d.zk.client_id != session:  # a new session: the one that won the election is gone
                    break
                self.d.progress.beat("election")
                if self._yield_to() is not None:
                    log.warning("stepping down: %s was asked to be primary", self.d.state.primary_request())
                    break
                stalled = self.d.progress.stalled(PRIMARY_CONTROLLERS)
                if stalled:
                    self._say_stalled(stalled)
                    break
                if not self.d.state.claim_primary(self.me, take_over=False):
                    log.error("stepping down: another coordinator holds the primary's znode")
                    break
                self.d.stopping.wait(LEAD_PASS)
        finally:
            self.d.fencer.end_term()
            self.is_primary.clear()
            self.d.networks.step_down()
            self._drop_floating_ips()
            log.warning("this node is no longer the primary coordinator")

    def _leave(self, election: KazooElection) -> None:
        """Make sure this contender's znode is gone (a release cut off by a lost connection leaves it behind, and a
        session that survives the outage would keep it, ahead of every other coordinator, for good)."""
        while not self.d.stopping.is_set():
            try:
                self.d.state.resign_primary(election)
                return
            except KazooException as exc:
                if self.d.zk.state == KazooState.LOST:
                    return  # the session ended: its ephemeral znodes went with it
                log.info("leaving the election: %s; trying again", exc)
                self.d.stopping.wait(1.0)

    def check_stall(self) -> None:
        """Called by the main loop: a primary whose election thread or fencer stalls gives up its term from here
        (the stalled thread cannot), dropping its floating IPs and its znodes so that the next coordinator takes
        over now."""
        if not self.is_primary.is_set() or self.resigned.is_set():
            return
        stalled = self.d.progress.stalled(PRIMARY_CONTROLLERS)
        if not stalled:
            return
        self.resigned.set()
        self.d.fencer.end_term()
        self._drop_floating_ips()
        self._say_stalled(stalled)
        election = self.current
        if election is not None:
            try:
                self.d.state.resign_primary(election)
            except KazooException as exc:
                log.error("could not leave the election: %s", exc)

    def _say_stalled(self, stalled: dict[str, float]) -> None:
        message = f"primary {self.me} stepped down: {_describe(stalled)} stalled"
        log.error(message)
        with contextlib.suppress(Exception):
            self.d.state.raise_fault(f"primary-stalled-{self.me}", "primary-stalled", message, node=self.me)

    def _drop_floating_ips(self) -> None:
        for device, address, prefix in netif.floating_ips(self.d.cfg):
            netif.remove_address(device, address, prefix)

    def stop(self) -> None:
        self.thread.join(timeout=5)


def _describe(stalled: dict[str, float]) -> str:
    return ", ".join(f"{name} (no progress for {age:.0f}s)" for name, age in sorted(stalled.items()))
