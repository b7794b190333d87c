"""Request and response models of the API. They validate requests and generate the OpenAPI document.

Records the API answers as they are stored (Task, Fault, PoolRecord, StorageStatus, ...) are the state layer's own
models (pvc.nodeos.state.models); this module holds what the API adds: requests, queries and views.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from pvc.config import networks, pools
from pvc.config.choices import AclPolicy, NetworkType, Selector, VmMigrationMethod
from pvc.config.schema import DhcpRange, Dns
from pvc.config.types import IPv4, IPv4Net, IPv6, IPv6Net, Mtu, PoolCopies, PoolPgs
from pvc.nodeos.state.models import FenceInfo, Keepalive, NetworkRecord, VmMeta

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


def _integral(value: object) -> object:
    # JSON has one number type: 300.0 is the integer 300 (as JSON Schema says), "300" is not.
    return int(value) if isinstance(value, float) and value.is_integer() else value


Downtime = Annotated[int, BeforeValidator(_integral), Field(ge=1, le=60000)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """Query strings arrive as text: these models convert."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    error: str
    detail: str
    field: str | None = None


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
    xml: str
    meta: VmMeta
    reason: str


class VmListQuery(Query):
    node: Annotated[str | None, Field(max_length=64)] = None
    state: Annotated[str | None, Field(max_length=32)] = None
    tag: Annotated[str | None, Field(max_length=64)] = None


class VmDefine(Request):
    xml: Annotated[str, Field(min_length=1, max_length=1_000_000, description="libvirt domain XML")]
    node: Name | None = None
    node_limit: list[Name] = []
    selector: Selector | None = None
    autostart: bool = False
    migration_method: VmMigrationMethod | None = None
    max_downtime_ms: Downtime | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = []


class VmStateChange(Request):
    action: Literal["start", "shutdown", "stop", "restart", "disable"]


class VmMigrate(Request):
    action: Literal["migrate", "move", "unmigrate"] = "migrate"
    target: Name | None = None


class VmMetaChange(Request):
    node_limit: list[Name] | None = None
    selector: Selector | None = None
    autostart: bool | None = None
    migration_method: VmMigrationMethod | None = None
    max_downtime_ms: Downtime | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = None


class Removed(BaseModel):
    removed: str


# -- storage --------------------------------------------------------------------------------------------------
StorageName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Bytes = Annotated[int, BeforeValidator(_integral), Field(ge=1, description="bytes")]


class PoolCreate(Request):
    name: StorageName
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
    name: StorageName
    size: Bytes
    force: bool = Field(False, description="create even when the pool is over 80 % full")


class VolumeChange(Request):
    size: Bytes | None = Field(None, description="grow to this many bytes (shrinking is refused)")
    name: StorageName | None = Field(None, description="rename to this")
    force: bool = Field(False, description="grow even when the pool is over 80 % full")


class VolumeClone(Request):
    snapshot: StorageName
    name: StorageName
    force: bool = False


class VolumeCopy(Request):
    name: StorageName
    pool: StorageName | None = Field(None, description="destination pool (default: the same)")
    force: bool = False


class UploadQuery(Query):
    format: Literal["raw", "qcow2"] = "raw"
    force: bool = False


class DownloadQuery(Query):
    snapshot: Annotated[str | None, Field(max_length=64)] = None


class SnapshotView(BaseModel):
    pool: str
    volume: str
    name: str
    size: int
    protected: bool


class SnapshotCreate(Request):
    name: StorageName


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
class ImageUploadQuery(UploadQuery):
    pool: Annotated[Name | None, Field(description="one of PVC's RBD pools; default: the only one")] = None
    description: Annotated[str, Field(max_length=1024)] = ""
