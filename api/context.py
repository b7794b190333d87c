"""What every resource needs: the cluster config, the state layer over ZooKeeper, Ceph, and the API keys.

The context is built once per process, from what pvc.api.startup derived in a helper process: the config without
its secrets, ZooKeeper's password and the API key material, never the join key."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from kazoo.protocol.states import KazooState

from pvc.api import keys as api_keys
from pvc.api.errors import ClusterNotReady
from pvc.api.startup import StartupError, load
from pvc.config.schema import ClusterFile
from pvc.nodeos.provisioner import db, migrate
from pvc.nodeos.state.cache import ApiKeyCache, VmCache
from pvc.nodeos.state.clock import ZkClock
from pvc.nodeos.state.models import ApiKeyRecord
from pvc.nodeos.state.store import ClusterState, cluster_client
from pvc.nodeos.storage.ceph import Connection
from pvc.nodeos.storage.upload import DEFAULT_SPOOL


class ConfigError(Exception):
    pass


@dataclass
class Context:
    cfg: ClusterFile  # without secrets (pvc.api.startup.redacted)
    base_dir: Path
    keys: api_keys.KeyMaterial
    zk_password: str
    zk_hosts: str
    vm_mac_prefix: str
    ceph_secret_uuid: str
    provisioner_password: str  # the app role's, on the provisioner's database
    ceph_conf: str = "/etc/ceph/ceph.conf"
    ceph_name: str = "client.admin"
    upload_spool: Path = DEFAULT_SPOOL  # where qcow2/VMDK uploads are spooled for qemu-img: on PVCDATA
    ceph_keyring: str | None = None
    postgres: str | None = None  # host:port,... of PostgreSQL's members; None: every coordinator's

    def __post_init__(self) -> None:
        # This worker's librados connection (made on first use, after gunicorn forked the worker).
        self.ceph = Connection(self.ceph_conf, self.ceph_name, keyring=self.ceph_keyring)
        self._state: ClusterState | None = None
        self._vm_cache: VmCache | None = None
        self._key_cache: ApiKeyCache | None = None
        self._clock: ZkClock | None = None
        self._formed = False
        self._provisioner: db.Database | None = None
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
                zk = cluster_client(self.cfg, password=self.zk_password, hosts=self.zk_hosts)
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

    @property
    def provisioner(self) -> db.Database:
        """The provisioner's database on the Patroni leader. The first transaction of this worker applies the
        schema's migrations (under the runner's lock); a failover is retried for about Patroni's leader TTL."""
        with self._lock:
            if self._provisioner is None:
                patroni = self.cfg.patroni
                self._provisioner = db.Database(
                    db.app_dsn_with(self.cfg, self.provisioner_password, self.postgres),
                    retry_for=patroni.ttl + 2 * patroni.loop_wait,
                    prepare=migrate.apply,
                )
            return self._provisioner

    def ready_state(self) -> ClusterState:
        """The state layer of a formed cluster (503 before formation has created the layout)."""
        state = self.state
        if not self._formed:  # once formed, always formed: no round trip per request
            if state.schema_version() is None:
                raise ClusterNotReady("the cluster has not formed yet: no state in ZooKeeper")
            self._formed = True
        return state

    def api_keys(self) -> list[ApiKeyRecord]:
        """Every API key's record (the authentication middleware asks at each request). At the first call, this
        worker seeds cluster.toml's keys (pvc.api.keys.seed) and starts watching the keys."""
        state = self.state
        with self._lock:
            if self._key_cache is None:
                api_keys.seed(state, self.keys)
                cache = ApiKeyCache(state.zk)
                if not cache.start():
                    raise ClusterNotReady("the API keys could not be read from ZooKeeper in time")
                self._key_cache = cache
            return self._key_cache.snapshot()

    def key_written(self, record: ApiKeyRecord | None, name: str) -> None:
        """This worker wrote key `name` (None: removed it): see it at once, before the watch reports it."""
        with self._lock:
            if self._key_cache is not None:
                self._key_cache.saw(name, record)


_built: Context | None = None


def from_environment() -> Context:
    """The process's context, from PVC_CONFIG (cluster.toml), PVC_ZOOKEEPER and PVC_CEPH_* (optional overrides):
    built at the first call (gunicorn's config module makes it, in the master), the same one afterwards."""
    global _built
    if _built is not None:
        return _built
    path = os.environ.get("PVC_CONFIG", "/run/pvc/cluster.toml")
    try:
        startup = load(path)
    except StartupError as exc:
        raise ConfigError(str(exc)) from None
    _built = Context(
        cfg=startup.cfg,
        base_dir=startup.base_dir,
        keys=startup.keys,
        zk_password=startup.zk_password,
        vm_mac_prefix=startup.vm_mac_prefix,
        ceph_secret_uuid=startup.ceph_secret_uuid,
        provisioner_password=startup.provisioner_password,
        zk_hosts=os.environ.get("PVC_ZOOKEEPER") or startup.cfg.zookeeper_hosts(),
        ceph_conf=os.environ.get("PVC_CEPH_CONF", "/etc/ceph/ceph.conf"),
        ceph_name=os.environ.get("PVC_CEPH_NAME", "client.admin"),
        upload_spool=Path(os.environ.get("PVC_UPLOAD_SPOOL") or DEFAULT_SPOOL),
        ceph_keyring=os.environ.get("PVC_CEPH_KEYRING") or None,
        postgres=os.environ.get("PVC_POSTGRES") or None,
    )
    return _built
