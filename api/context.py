"""What every resource needs: the cluster config, the state layer over ZooKeeper, Ceph, and the API keys."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from kazoo.protocol.states import KazooState

from pvc.api.auth import ApiKeys, digest
from pvc.api.errors import ClusterNotReady
from pvc.config.load import load, resolve_file
from pvc.config.schema import ClusterFile
from pvc.config.secrets import initial_api_key, read_join_key
from pvc.nodeos.state.cache import VmCache
from pvc.nodeos.state.clock import ZkClock
from pvc.nodeos.state.store import ClusterState, cluster_client
from pvc.nodeos.storage.ceph import Connection
from pvc.nodeos.storage.upload import DEFAULT_SPOOL


class ConfigError(Exception):
    pass


@dataclass
class Context:
    cfg: ClusterFile
    base_dir: Path
    keys: ApiKeys
    join_key: str
    zk_hosts: str
    ceph_conf: str = "/etc/ceph/ceph.conf"
    ceph_name: str = "client.admin"
    upload_spool: Path = DEFAULT_SPOOL  # where qcow2/VMDK uploads are spooled for qemu-img: on PVCDATA

    def __post_init__(self) -> None:
        # This worker's librados connection (made on first use, after gunicorn forked the worker).
        self.ceph = Connection(self.ceph_conf, self.ceph_name)
        self._state: ClusterState | None = None
        self._vm_cache: VmCache | None = None
        self._clock: ZkClock | None = None
        self._formed = False
        self._lock = threading.Lock()

    @property
    def vm_cache(self) -> VmCache:
        """Every VM's spec and status, kept current by watches (started on first use)."""
        state = self.ready_state()
        with self._lock:
            if self._vm_cache is None:
                self._vm_cache = VmCache(state.zk)
                self._vm_cache.start()
            return self._vm_cache

    @property
    def clock(self) -> ZkClock:
        """ZooKeeper's clock, learnt from the nodes' keepalives (started on first use: it waits up to one keepalive
        interval for the first one)."""
        state = self.ready_state()
        with self._lock:
            clock, started = self._clock, self._clock is None
            if clock is None:
                clock = self._clock = ZkClock(state.zk)
                clock.start()
        if started:  # outside the lock: other requests go on meanwhile
            clock.wait_known(self.cfg.timers.keepalive_interval)
        return clock

    @property
    def state(self) -> ClusterState:
        """The state layer; connects on first use (after gunicorn forked this worker)."""
        with self._lock:
            if self._state is None:
                zk = cluster_client(self.cfg, self.join_key, hosts=self.zk_hosts)
                try:
                    zk.start(timeout=5)
                except Exception as exc:
                    zk.stop()
                    zk.close()
                    raise ClusterNotReady(f"ZooKeeper at {self.zk_hosts} is not reachable: {exc}") from None
                self._state = ClusterState(zk)
            if self._state.zk.state != KazooState.CONNECTED:
                raise ClusterNotReady(f"lost the connection to ZooKeeper at {self.zk_hosts}")
            return self._state

    def ready_state(self) -> ClusterState:
        """The state layer of a formed cluster (503 before formation has created the layout)."""
        state = self.state
        if not self._formed:  # once formed, always formed: no round trip per request
            if state.schema_version() is None:
                raise ClusterNotReady("the cluster has not formed yet: no state in ZooKeeper")
            self._formed = True
        return state


def from_environment() -> Context:
    """Build the context from PVC_CONFIG (cluster.toml) and PVC_ZOOKEEPER (optional override)."""
    path = os.environ.get("PVC_CONFIG", "/run/pvc/cluster.toml")
    result = load(path)
    if not result.valid:
        raise ConfigError("; ".join(p.format(path) for p in result.errors))
    cfg = result.config
    assert cfg is not None
    base = Path(path).resolve().parent
    join_key = read_join_key(cfg, base)
    keys = {"initial": digest(initial_api_key(join_key))}
    for key in cfg.api.keys:
        if key.sha256 is not None:
            keys[key.name] = bytes.fromhex(key.sha256)
        elif key.key is not None:
            keys[key.name] = digest(key.key)
        else:
            key_path = resolve_file(key.key_file or "", base)
            try:
                keys[key.name] = digest(key_path.read_text().strip())
            except OSError as exc:
                raise ConfigError(f"api.keys '{key.name}': cannot read {key_path}: {exc.strerror}") from None
    return Context(
        cfg=cfg,
        base_dir=base,
        keys=ApiKeys(keys),
        join_key=join_key,
        zk_hosts=os.environ.get("PVC_ZOOKEEPER") or cfg.zookeeper_hosts(),
        ceph_conf=os.environ.get("PVC_CEPH_CONF", "/etc/ceph/ceph.conf"),
        ceph_name=os.environ.get("PVC_CEPH_NAME", "client.admin"),
        upload_spool=Path(os.environ.get("PVC_UPLOAD_SPOOL") or DEFAULT_SPOOL),
    )
