"""The records stored in ZooKeeper, one pydantic model each (JSON on the wire).

Records ignore unknown fields, so a daemon one version behind can still read what a newer one wrote during a
rolling upgrade. The API reuses these models for its responses.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pvc.config.choices import Selector, VmMigrationMethod
from pvc.nodeos.state.vmstate import State

DaemonState = Literal["init", "run", "stop", "dead", "fenced"]
DomainState = Literal["ready", "flushing", "flushed", "unflushing"]
ObservedState = Literal["running", "stopped", "starting", "stopping", "migrating", "failed"]


def now() -> float:
    return round(time.time(), 3)


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FenceInfo(Record):
    """A fence's progress, kept in ZooKeeper so that the next primary resumes it (docs/runtime.md, Fencing)."""

    state: Literal["fencing", "off", "failed"]
    message: str = ""
    at: float = Field(default_factory=now)
    attempts: int = 0  # power-off attempts so far
    recoveries: int = 0  # recoveries of its VMs that did not finish (their retries back off on this)
    retry_at_ms: int = 0  # failed (or off and not yet recovered): the next try, on ZooKeeper's clock
    by: str = ""  # the primary that runs it; a write by any other node is refused
    recovered: bool = False  # off: every VM of the node was restarted elsewhere (or parked)


class NodeRecord(Record):
    name: str
    coordinator: bool = False
    daemon_state: DaemonState = "init"
    domain_state: DomainState = "ready"
    fence: FenceInfo | None = None
    task: str | None = None  # the flush/ready task this node is working on
    pvc_version: str = ""
    cpus: int = 0
    kernel: str = ""
    updated: float = Field(default_factory=now)


class Keepalive(Record):
    """Resources and running VMs of a node, written every keepalive interval. Memory in MiB."""

    ts: float = Field(default_factory=now)
    mem_total: int = 0
    mem_used: int = 0
    mem_free: int = 0
    mem_allocated: int = 0
    mem_provisioned: int = 0
    cpus: int = 0
    vcpus_allocated: int = 0
    load: float = 0.0
    running: list[str] = []
    libvirt_ok: bool = True
    disk_used_pct: dict[str, float] = {}  # mount point -> % used (PVCDATA, and / which is the RAM overlay)


class VmMeta(Record):
    node_limit: list[str] = []
    selector: Selector | None = None  # None: the cluster default (cluster.toml [migration] selector)
    autostart: bool = False
    migration_method: VmMigrationMethod | None = None  # None: the cluster default
    max_downtime_ms: int | None = None
    migration_timeout_s: int | None = None  # None: the cluster default (cluster.toml [migration] timeout)
    tags: list[str] = []


class VmSpec(Record):
    """What the cluster wants for one VM."""

    uuid: str
    name: str
    xml: str
    state: State = "stop"
    node: str
    last_node: str | None = None  # set by migrate (temporary), cleared by move; unmigrate returns there
    memory_mib: int = 0
    vcpus: int = 0
    meta: VmMeta = VmMeta()
    task: str | None = None  # the migration task the node moving this VM reports to
    created: float = Field(default_factory=now)
    updated: float = Field(default_factory=now)


class VmName(Record):
    """An entry of the VM name index: the VM that holds the name."""

    uuid: str


class VmStatus(Record):
    """What the node that runs (or last ran) the VM observes."""

    state: ObservedState = "stopped"
    node: str | None = None
    reason: str = ""
    updated: float = Field(default_factory=now)


class LogRing(Record):
    lines: list[str] = []


class Fault(Record):
    id: str
    kind: str
    message: str
    node: str | None = None
    first: float = Field(default_factory=now)
    last: float = Field(default_factory=now)
    count: int = 1
    acknowledged: bool = False


class Task(Record):
    id: str
    kind: str
    target: str
    state: Literal["pending", "running", "succeeded", "failed"] = "pending"
    progress: int = 0
    total: int = 0
    message: str = ""
    created: float = Field(default_factory=now)
    updated: float = Field(default_factory=now)


class FormationStep(Record):
    name: str
    state: Literal["pending", "running", "done", "failed"] = "pending"
    message: str = ""
    updated: float = Field(default_factory=now)


class FormationProgress(Record):
    node: str
    steps: list[FormationStep] = []
    done: bool = False
    updated: float = Field(default_factory=now)


class Primary(Record):
    node: str
    since: float = Field(default_factory=now)


class Maintenance(Record):
    enabled: bool = False


class PoolRecord(Record):
    """A Ceph pool and its use: what the storage layer lists, the primary keeps in StorageStatus and the API
    answers."""

    name: str
    id: int = 0  # (0 in a status written before the id was kept)
    size: int  # copies of each object
    min_size: int  # copies needed to accept writes
    pgs: int
    stored_bytes: int
    capacity_bytes: int  # what it can hold: what it stores plus what it may still take, capped by its quota
    quota_bytes: int = 0  # 0: no quota
    used_percent: float
    objects: int


class StorageStatus(Record):
    """Ceph's health and usage, as the primary coordinator last saw it (every keepalive interval)."""

    health: str  # HEALTH_OK, HEALTH_WARN, HEALTH_ERR, or "unreachable"
    checks: dict[str, str] = {}  # check name -> summary
    total_bytes: int = 0
    used_bytes: int = 0
    avail_bytes: int = 0
    used_percent: float = 0.0
    osds: int = 0
    osds_up: int = 0
    osds_in: int = 0
    pgs: int = 0
    pg_states: dict[str, int] = {}
    pools: list[PoolRecord] = []
    by: str = ""  # the node that wrote it
    updated: float = Field(default_factory=now)


class OsdRequest(Record):
    """A request to turn the blank disks matching `selector` on `node` into OSDs (the node's formation acts)."""

    id: str
    node: str
    selector: dict[str, str | int]
    task: str
    state: Literal["pending", "done", "failed"] = "pending"
    message: str = ""
    created: float = Field(default_factory=now)
