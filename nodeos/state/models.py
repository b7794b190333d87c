"""The records stored in ZooKeeper, one pydantic model each (JSON on the wire).

Records ignore unknown fields, so a daemon one version behind can still read what a newer one wrote during a
rolling upgrade; a VM's definition is read the same way (`VmSpec`), although the definition itself is strict as API
input. The API reuses these models for its responses.
"""

from __future__ import annotations

import time
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pvc.config.choices import Accelerator, AclPolicy, ApiRole, NetworkOwner, NetworkType
from pvc.config.schema import AclFields, DhcpRange, Reservation
from pvc.nodeos.state.vmdef import Migration, Placement, VmDefinition
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
    accelerator: Accelerator | None = None  # how this node's pvcd starts VMs (None: an older pvcd)
    disk_used_pct: dict[str, float] = {}  # mount point -> % used (PVCDATA, and / which is the RAM overlay)


class Refusal(Record):
    """Why a VM has no definition: one part of what it was defined with, and what is wrong with it."""

    path: str  # an XML path (`devices/disk[2]/source/@file`) or a definition field (`nics.0.mac`)
    message: str


class VmSpec(Record):
    """What the cluster wants for one VM: its definition, and where and in which state it should be.

    A VM has a definition unless it was defined before PVC typed its VMs (schema 3) with a domain XML the allowlist
    refuses: then `original_xml` keeps that XML for the administrator and `refused` says why; such a VM cannot start
    until it is defined again or modified. A definition that does not validate when read (written by hand, or by a
    newer PVC) is read the same way: kept in `unreadable_definition`, with its errors in `refused`.
    """

    uuid: str
    name: str  # always the definition's name (and `uuid` its UUID): the record and the name index are keyed on them
    definition: VmDefinition | None = None
    original_xml: str | None = None
    unreadable_definition: dict[str, Any] | None = None
    refused: list[Refusal] = []
    state: State = "stop"
    node: str
    last_node: str | None = None  # set by migrate (temporary), cleared by move; unmigrate returns there
    task: str | None = None  # the migration task the node moving this VM reports to
    created: float = Field(default_factory=now)
    updated: float = Field(default_factory=now)

    @model_validator(mode="before")
    @classmethod
    def _read_definition(cls, data: Any) -> Any:
        """Read a stored definition leniently: fields this PVC does not know are dropped, and one that does not
        validate leaves the VM without a definition (and unable to start) instead of making the record unreadable."""
        if not isinstance(data, dict) or not isinstance(data.get("definition"), dict):
            return data
        raw = data["definition"]
        try:
            definition = VmDefinition.model_validate(known_fields(VmDefinition, raw))
        except ValidationError as exc:
            refused = [
                Refusal(path=".".join(str(p) for p in e["loc"]) or "definition", message=e["msg"]) for e in exc.errors()
            ]
            return {**data, "definition": None, "unreadable_definition": raw, "refused": refused}
        if (definition.name, definition.uuid) != (data.get("name"), data.get("uuid")):
            why = f"the definition is of {definition.name} ({definition.uuid}), not of this VM"
            refused = [Refusal(path="name", message=why)]
            return {**data, "definition": None, "unreadable_definition": raw, "refused": refused}
        return {**data, "definition": definition}

    @model_validator(mode="after")
    def _keyed_on_the_definition(self) -> VmSpec:
        d = self.definition
        if d is not None and (d.name != self.name or d.uuid != self.uuid):
            raise ValueError(f"the definition is of {d.name} ({d.uuid}), the record of {self.name} ({self.uuid})")
        return self

    # What the definition says, with what a VM without one counts as (it cannot start, so it reserves nothing).
    @property
    def memory_mib(self) -> int:
        return self.definition.memory_mib if self.definition else 0

    @property
    def vcpus(self) -> int:
        return self.definition.vcpus if self.definition else 0

    @property
    def tags(self) -> list[str]:
        return self.definition.tags if self.definition else []

    @property
    def placement(self) -> Placement:
        return self.definition.placement if self.definition else Placement()

    @property
    def migration(self) -> Migration:
        return self.definition.migration if self.definition else Migration()

    @property
    def macs(self) -> set[str]:
        """The MACs its NICs hold in the cluster's MAC index."""
        return {n.mac for n in self.definition.nics if n.mac} if self.definition else set()

    def with_definition(self, definition: VmDefinition) -> VmSpec:
        """This VM with a (new) definition, and no refusal left over from an earlier one."""
        return self.model_copy(
            update={"definition": definition, "original_xml": None, "unreadable_definition": None, "refused": []}
        )

    def with_autostart(self, autostart: bool) -> VmSpec:
        """This VM with its placement's autostart set (what flush and fencing use to bring a VM back later)."""
        if self.definition is None or self.definition.placement.autostart == autostart:
            return self
        placement = self.definition.placement.model_copy(update={"autostart": autostart})
        return self.model_copy(update={"definition": self.definition.model_copy(update={"placement": placement})})


def known_fields(model: type[BaseModel], data: Any) -> Any:
    """`data` without the keys `model` (and the models nested in it) has no field for."""
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        nested = _model_in(field.annotation)
        if nested is not None:
            value = [known_fields(nested, v) for v in value] if isinstance(value, list) else known_fields(nested, value)
        out[key] = value
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (`Disk` in `Annotated[list[Disk], ...]`, `Topology | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


class VmName(Record):
    """An entry of the VM name index: the VM that holds the name."""

    uuid: str


class VmMac(Record):
    """An entry of the MAC index: the VM one of whose NICs holds the MAC address."""

    uuid: str


class VmSeed(Record):
    """The cloud-init documents the provisioner put into a created VM's seed, kept beside the VM (and removed with
    it) so that the primary's metadata service serves the same (docs/provisioner.md)."""

    meta_data: dict[str, Any] = {}
    user_data: str = ""
    network_config: str = ""
    profile: str | None = None


class VmStatus(Record):
    """What the node that runs (or last ran) the VM observes."""

    state: ObservedState = "stopped"
    node: str | None = None
    reason: str = ""
    nics: list[str] = []  # running: the MACs of the NICs plugged into the domain (hot-plug shows here)
    volumes: list[str] = []  # running: the RBD volumes plugged into the domain as disks (pool/volume)
    pending: list[str] = []  # running: changes of the definition that wait for the next start, one line each
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


class DataDisk(Record):
    """Which disk holds a node's PVCDATA, as formation found or made it (the disk itself carries the same record in
    PVCDATA's marker file: boot/data.py Identity). `wiped`: what data_disk.allow_wipe removed when PVCDATA was made."""

    node: str
    serial: str
    model: str = ""
    size: int = 0
    created: float | None = None  # None: PVCDATA predates the record
    wiped: list[str] = []


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


class NetworkRecord(Record):
    """A client network (docs/networks.md): what every node bridges and, for a managed network, what the primary
    serves. `vni` names it everywhere (its bridge is vmbr<vni>); a bridged network's VNI is its VLAN id. Addresses
    are text as given; the API and cluster.toml checks validated them."""

    vni: int
    name: str
    type: NetworkType
    owner: NetworkOwner = "api"
    description: str = ""
    mtu: int  # what the node sets: the asked MTU clamped to what the underlay allows
    subnet: str | None = None
    gateway: str | None = None
    subnet6: str | None = None
    gateway6: str | None = None
    dhcp: DhcpRange | None = None  # None: no DHCPv4
    domain: str | None = None  # DNS domain served by the network's dnsmasq
    dns_servers: list[str] = []  # where that dnsmasq forwards other names
    nat: bool = False
    reservations: list[Reservation] = []
    acl_policy: AclPolicy = "accept"
    acls: list[AclFields] = []
    created: float = Field(default_factory=now)
    updated: float = Field(default_factory=now)


class Lease(Record):
    """A DHCPv4 lease handed out by a managed network's dnsmasq (kept so a new primary's dnsmasq knows it)."""

    mac: str
    ip: str
    hostname: str = ""
    expires: int = 0  # Unix time; 0: never
    client_id: str = ""
    updated: float = Field(default_factory=now)


KeyOwner = Literal["config", "derived", "api"]


class ApiKeyRecord(Record):
    """An API key as the cluster keeps it: its digest, never the key (pvc.api.keys says how digests are made).

    owner: "config" for cluster.toml's [api] keys (seeded by the API at start; removed from here when removed from
    the file), "derived" for the initial key derived from the join key, "api" for keys made by `pvc cluster key add`.
    A revoked config or derived key stays, marked, so that the next start does not bring it back."""

    name: str
    role: ApiRole
    owner: KeyOwner
    scheme: Literal["hmac-sha256", "sha256"] = "hmac-sha256"
    salt: str = ""  # hex
    digest: str  # hex
    created: float = Field(default_factory=now)
    revoked: bool = False
    revoked_at: float | None = None
