"""A real ZooKeeper (Debian's package) for component tests, configured by the product's renderer."""

from __future__ import annotations

import os
import shutil
import signal
import socket
from pathlib import Path

from kazoo.client import KazooClient

from pvc.nodeos.formation import zookeeper as zkform
from tests.harness.procs import Proc, port_free, wait_until


def four_letter(host: str, port: int, word: str = "srvr") -> str:
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(word.encode())
        chunks = []
        while data := s.recv(4096):
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


class ZooKeeper:
    def __init__(self, workdir: Path, address: str, port: int, netns: str | None = None, tick_ms: int = 500):
        if netns is None:
            port_free(port, address)
        self.address, self.port = address, port
        data = workdir / "data"
        shutil.rmtree(data, ignore_errors=True)  # every ZooKeeper here starts empty
        data.mkdir(parents=True)
        self.params = zkform.ZkParams(
            data_dir=str(data), client_address=address, client_port=port, tick_time_ms=tick_ms, heap_bytes=128 * 1024**2
        )
        cfg = workdir / "zoo.cfg"
        cfg.write_text(zkform.render_cfg(self.params))
        argv = zkform.command(str(cfg), self.params)
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        self.argv, self.log = argv, workdir / "zookeeper.log"
        self.proc = Proc("zookeeper", argv, self.log)

    @property
    def hosts(self) -> str:
        return f"{self.address}:{self.port}"

    def wait_ready(self, timeout: float = 60, hosts: str | None = None) -> None:
        def connects() -> bool:
            zk = KazooClient(hosts=hosts or self.hosts, timeout=2)
            try:
                zk.start(timeout=1)
                return True
            finally:
                zk.stop()
                zk.close()

        wait_until("ZooKeeper to accept a client", connects, timeout, interval=0.2, proc=self.proc)

    def stop(self) -> None:
        self.proc.stop(timeout=5)

    def freeze(self, frozen: bool = True) -> None:
        """SIGSTOP (or SIGCONT) the server: a long GC pause, or a hung host. Its clients' sessions run out meanwhile."""
        os.kill(self.proc.pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def start(self) -> None:
        """Start it again after stop(), on the data it had (its sessions, whose clients may reconnect in time)."""
        if not self.proc.alive():
            self.proc = Proc("zookeeper", self.argv, self.log)
