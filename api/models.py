"""Request and response models of the API. They validate requests and generate the OpenAPI document.

Records the API answers as they are stored (Task, Fault, PoolRecord, StorageStatus, ...) are the state layer's own
models (pvc.nodeos.state.models); this module holds what the API adds: requests, queries and views.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from pvc.config import networks, pools
from pvc.config.choices import AclPolicy, ApiRole, ImageFormat, NetworkType, NicModel, Selector, VmMigrationMethod
from pvc.config.names import Name
from pvc.config.schema import DhcpRange, Dns
from pvc.config.types import IPv4, IPv4Net, IPv6, IPv6Net, Mac, Mtu, PoolCopies, PoolPgs
from pvc.nodeos.state.models import FenceInfo, Keepalive, KeyOwner, NetworkRecord, Refusal
from pvc.nodeos.state.vmdef import (
    MAX_DOWNTIME_MS,
    MAX_MEMORY_MIB,
    MAX_MIGRATION_TIMEOUT_S,
    MAX_NODE_LIMIT,
    MAX_TAGS,
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    DiskBus,
    Topology,
    VmDefinition,
    Vni,
    Volume,
)
from pvc.nodeos.state.vmimport import MAX_XML


def _integral(value: object) -> object:
    # JSON has one number type: 300.0 is the integer 300 (as JSON Schema says), "300" is not.
    return int(value) if isinstance(value, float) and value.is_integer() else value


Downtime = Annotated[int, BeforeValidator(_integral), Field(ge=1, le=MAX_DOWNTIME_MS)]
MigrationTimeout = Annotated[int, BeforeValidator(_integral), Field(ge=1, le=MAX_MIGRATION_TIMEOUT_S)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """Query strings arrive as text: these models convert."""

    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    path: str
    message: str


class ErrorBody(BaseModel):
    error: str
    detail: str
    field: str | None = None
    problems: Annotated[
        list[Problem] | None, Field(description="a refused domain XML: every refused part, by its XML path")
    ] = None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    zookeeper: bool
    formed: bool
    version: str


# -- cluster --------------------------------------------------------------------------------------------------
class Counts(BaseModel):
    total: int
    by_state: dict[str, int]


class ClusterStatus(BaseModel):
    name: str
    health: Literal["ok", "degraded"]
    primary: str | None
    maintenance: bool
    nodes: Counts
    vms: Counts
    faults: int


class MaintenanceSet(Request):
    enabled: bool


class Maintenance(BaseModel):
    enabled: bool


# -- API keys -------------------------------------------------------------------------------------------------
class ApiKeyView(BaseModel):
    name: str
    role: ApiRole
    owner: KeyOwner = Field(description="config: cluster.toml [api] keys; derived: the initial key; api: made here")
    created: float
    revoked: bool
    revoked_at: float | None = None


class ApiKeyAdd(Request):
    name: Name
    role: ApiRole


class ApiKeyNew(ApiKeyView):
    key: str = Field(description="the key itself: shown this once, never stored")


# -- nodes ----------------------------------------------------------------------------------------------------
class NodeView(BaseModel):
    name: str
    coordinator: bool
    primary: bool
    daemon_state: str
    domain_state: str
    keepalive_age_s: float | None
    resources: Keepalive | None
    fence: FenceInfo | None
    task: str | None


class LogQuery(Query):
    lines: Annotated[int, Field(ge=1, le=10000)] = 100


class LogLines(BaseModel):
    lines: list[str]


# -- VMs ------------------------------------------------------------------------------------------------------
class VmSummary(BaseModel):
    uuid: str
    name: str
    state: str
    node: str
    last_node: str | None
    running: str
    running_on: str | None
    memory_mib: int
    vcpus: int
    tags: list[str]


class VmDetail(VmSummary):
    definition: Annotated[VmDefinition | None, Field(description="none: see `refused`")]
    xml: Annotated[
        str | None,
        Field(
            description="the domain XML rendered from the definition for its home node (read-only; the console "
            "log path is the one of a node with PVC's default paths)"
        ),
    ]
    original_xml: Annotated[
        str | None, Field(description="a VM without a definition: the domain XML it was defined with")
    ]
    refused: Annotated[list[Refusal], Field(description="why the VM has no definition (it cannot start)")]
    reason: str
    live_nics: Annotated[
        list[str], Field(description="running: the MACs of the NICs plugged into it (hot-plugged ones included)")
    ] = []
    live_volumes: Annotated[
        list[str], Field(description="running: the RBD volumes plugged into it as disks (hot-plugged ones included)")
    ] = []
    pending: Annotated[
        list[str], Field(description="running: changes of its definition that apply only at its next start")
    ] = []


class VmNicAdd(Request):
    """A NIC to add to a VM: it is stored in the definition and plugged into the VM if it runs."""

    network: Annotated[Vni, Field(description="the network's VNI (a bridged network's VLAN id)")]
    mac: Annotated[Mac | None, Field(description="unicast MAC; one in the cluster's prefix when not given")] = None
    model: NicModel = "virtio"


class VmNicQuery(Query):
    mac: Annotated[Mac | None, Field(description="which NIC, when the VM has several on the network")] = None


class VmListQuery(Query):
    node: Annotated[str | None, Field(max_length=64)] = None
    state: Annotated[str | None, Field(max_length=32)] = None
    tag: Annotated[str | None, Field(max_length=64)] = None


class VmModify(Request):
    """A VM's definition as JSON, or a libvirt domain XML that PVC imports through its allowlist."""

    definition: VmDefinition | None = None
    xml: Annotated[str | None, Field(min_length=1, max_length=MAX_XML, description="a libvirt domain XML")] = None

    @model_validator(mode="after")
    def _one_source(self) -> VmModify:
        if (self.definition is None) == (self.xml is None):
            raise ValueError("give either 'definition' or 'xml'")
        return self


class VmDefine(VmModify):
    node: Annotated[Name | None, Field(description="home node (default: the one the selector picks)")] = None


class VmStateChange(Request):
    action: Literal["start", "shutdown", "stop", "restart", "disable"]


class VmMigrate(Request):
    action: Literal["migrate", "move", "unmigrate"] = "migrate"
    target: Name | None = None


class PlacementChange(Request):
    node_limit: Annotated[list[Name], Field(max_length=MAX_NODE_LIMIT, description="[]: any node")] = []
    selector: Annotated[Selector | None, Field(description="null: the cluster's")] = None
    autostart: bool = False


class MigrationChange(Request):
    method: Annotated[VmMigrationMethod | None, Field(description="null: the cluster's")] = None
    max_downtime_ms: Annotated[Downtime | None, Field(description="null: the cluster's")] = None
    timeout_s: Annotated[MigrationTimeout | None, Field(description="null: the cluster's")] = None


class VmChange(Request):
    """Where and how a VM runs; a field left out stays as it is."""

    placement: PlacementChange | None = None
    migration: MigrationChange | None = None
    tags: Annotated[list[Name] | None, Field(max_length=MAX_TAGS)] = None


class VmResources(Request):
    """A VM's vCPUs and memory; a field left out stays as it is. A running VM gets them at its next start."""

    vcpus: Annotated[int | None, Field(ge=1, le=MAX_VCPUS)] = None
    topology: Annotated[
        Topology | None, Field(description="sockets × cores × threads = vcpus; none: kept if it still fits")
    ] = None
    memory_mib: Annotated[
        int | None,
        Field(ge=MIN_MEMORY_MIB, le=MAX_MEMORY_MIB, description="refused above the largest node's total memory"),
    ] = None

    @model_validator(mode="after")
    def _topology_needs_vcpus(self) -> VmResources:
        if self.topology is not None and self.vcpus is None:
            raise ValueError("a topology needs vcpus")
        return self


class VmRename(Request):
    name: Annotated[Name, Field(description="the new name: unique among VMs")]


class VmVolumeAdd(Request):
    """An existing RBD volume to attach to a VM as a disk: stored in the definition, plugged in if the VM runs."""

    volume: Annotated[Volume, Field(description="the RBD volume as 'pool/volume'")]
    bus: DiskBus = "virtio"


class Removed(BaseModel):
    removed: str


class VmRemoved(Removed):
    volumes: Annotated[list[str], Field(description="the disks removed with it (with delete_disks)")] = []
    kept: Annotated[list[str], Field(description="disks that could not be removed, each with why")] = []


class VmRemoveQuery(Query):
    delete_disks: Annotated[bool, Field(description="remove its volumes too (its cloud-init seed among them)")] = False


# -- storage --------------------------------------------------------------------------------------------------
Bytes = Annotated[int, BeforeValidator(_integral), Field(ge=1, description="bytes")]


class PoolCreate(Request):
    name: Name
    pgs: Annotated[PoolPgs, Field(description="placement groups: a power of two")] = pools.DEFAULT_PGS
    size: Annotated[PoolCopies, Field(description="copies of each object")] = pools.DEFAULT_SIZE
    min_size: Annotated[PoolCopies, Field(description="copies needed to accept writes")] = pools.DEFAULT_MIN_SIZE


class PoolChange(Request):
    size: PoolCopies | None = None
    min_size: PoolCopies | None = None
    quota_bytes: Annotated[int, BeforeValidator(_integral), Field(ge=0, description="0: no quota")] | None = None


class PoolRemoveQuery(Query):
    confirm: Annotated[str | None, Field(max_length=64, description="the pool's name, repeated")] = None


class VolumeView(BaseModel):
    pool: str
    name: str
    size: int
    snapshots: list[str]
    parent: str | None


class VolumeCreate(Request):
    name: Name
    size: Bytes
    force: bool = Field(False, description="create even when the pool is over 80 % full")


class VolumeChange(Request):
    size: Bytes | None = Field(None, description="grow to this many bytes (shrinking is refused)")
    name: Name | None = Field(None, description="rename to this")
    force: bool = Field(False, description="grow even when the pool is over 80 % full")


class VolumeClone(Request):
    snapshot: Name
    name: Name
    force: bool = False


class VolumeCopy(Request):
    name: Name
    pool: Name | None = Field(None, description="destination pool (default: the same)")
    force: bool = False


class UploadQuery(Query):
    format: ImageFormat = "raw"
    force: bool = False


class DownloadQuery(Query):
    snapshot: Name | None = None


class SnapshotView(BaseModel):
    pool: str
    volume: str
    name: str
    size: int
    protected: bool


class SnapshotCreate(Request):
    name: Name


class SnapshotChange(Request):
    protected: bool


class OsdView(BaseModel):
    id: int
    node: str
    device: str
    up: bool
    inside: bool = Field(description="in: the OSD takes data")
    weight: float
    size_bytes: int
    used_bytes: int
    used_percent: float
    pgs: int


class OsdAdd(Request):
    node: Name
    path: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(None, description="device path glob")
    model: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(None, description="model glob")
    serial: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(None, description="serial glob")


class OsdStateChange(Request):
    action: Literal["in", "out"]


class OsdRemoveQuery(Query):
    force: bool = Field(False, description="remove even when Ceph or the min_size check says it is unsafe")


# -- networks -------------------------------------------------------------------------------------------------
NetworkName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,31}$", description="a-z, 0-9, '-', up to 32")]


class NetworkCreate(Request):
    vni: Annotated[int, Field(ge=1, le=networks.MAX_VNI, description="VXLAN id; a bridged network's VLAN id")]
    name: NetworkName
    type: NetworkType
    description: Annotated[str, Field(max_length=256)] = ""
    mtu: Annotated[Mtu | None, Field(description="unset or too large: the most the underlay allows")] = None
    subnet: IPv4Net | None = None
    gateway: IPv4 | None = None
    subnet6: IPv6Net | None = None
    gateway6: IPv6 | None = None
    dhcp: Annotated[DhcpRange | None, Field(description="DHCPv4 on this range; unset: no DHCPv4")] = None
    dns: Annotated[Dns | None, Field(description="domain (default <name>.<cluster domain>) and name servers")] = None
    nat: bool = False
    acl_policy: AclPolicy = "accept"


class NetworkChange(Request):
    """Fields to change; a field given as null is cleared (subnet6, gateway6, dhcp, mtu: the most allowed)."""

    description: Annotated[str, Field(max_length=256)] | None = None
    mtu: Mtu | None = None
    subnet: IPv4Net | None = None
    gateway: IPv4 | None = None
    subnet6: IPv6Net | None = None
    gateway6: IPv6 | None = None
    dhcp: DhcpRange | None = None
    dns: Dns | None = None
    nat: bool | None = None
    acl_policy: AclPolicy | None = None


class NetworkView(NetworkRecord):
    vms: list[str] = Field(description="VMs with a NIC on the network")


class LeaseView(BaseModel):
    mac: str
    ip: str
    hostname: str
    expires: int = Field(description="Unix time; 0: never (a reservation)")
    static: bool = Field(description="a reservation (pvc network dhcp add)")


class LeaseQuery(Query):
    static: bool = Field(False, description="only the reservations")


# -- provisioner ----------------------------------------------------------------------------------------------
# The templates, userdata, profiles and images themselves are pvc.nodeos.provisioner.models.
class OvaUploadQuery(Query):
    pool: Annotated[Name | None, Field(description="one of PVC's RBD pools; default: the only one")] = None
    description: Annotated[str, Field(max_length=1024)] = ""
    networks: Annotated[
        str | None,
        Field(
            max_length=1024,  # the request line stays under gunicorn's 4094 bytes
            description="'OVF network=VNI' pairs, comma-separated: the PVC network each OVF network's NICs go on "
            "(default: the PVC network of the same name)",
        ),
    ] = None


class ImageUploadQuery(UploadQuery):
    pool: Annotated[Name | None, Field(description="one of PVC's RBD pools; default: the only one")] = None
    description: Annotated[str, Field(max_length=1024)] = ""
