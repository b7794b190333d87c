"""The cluster.toml schema: the one description of every key an administrator may write.

Field-level rules live here (types, ranges, which keys go together). Rules that compare several parts of the file
(unique IPs, subnets, coordinator counts, ...) live in `checks.py`, which runs on a model that passed this schema.
docs/cluster-toml.md explains each table; `pvc config schema` prints this as JSON Schema.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pvc.config import networks, pools
from pvc.config.choices import (
    DEFAULT_API_ROLE,
    AclAction,
    AclDirection,
    AclPolicy,
    AclProtocol,
    ApiRole,
    MigrationMethod,
    Selector,
)
from pvc.config.types import (
    Asn,
    Domain,
    FilePath,
    Hostname,
    IfName,
    IPv4,
    IPv4Net,
    IPv6,
    IPv6Net,
    Mac,
    Mtu,
    PoolCopies,
    PoolPgs,
    Port,
    Size,
    SshKey,
    TimeZone,
)

SCHEMA_VERSION = 1
JOIN_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = r"^[a-z][a-z0-9-]{0,31}$"
# Kernel device names are assigned in probe order and change between boots; they may not be a selector's only
# criterion. /dev/disk/by-* links (and loop devices combined with a size range) are fine.
_KERNEL_DISK_RE = re.compile(r"^/dev/(sd[a-z]+|vd[a-z]+|hd[a-z]+|xvd[a-z]+|nvme\d+n\d+|mmcblk\d+|loop\d+)\*?$")


class Model(BaseModel):
    """Strict: no type coercion, unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _exactly_one(model: BaseModel, *names: str) -> None:
    given = [n for n in names if getattr(model, n) is not None]
    if len(given) != 1:
        choice = " or ".join(f"'{n}'" for n in names)
        if given:
            raise ValueError(f"give only one of {choice}, not both")
        raise ValueError(f"give one of {choice}")


class Cluster(Model):
    name: Annotated[str, Field(pattern=_NAME_RE, description="cluster name: a-z, 0-9, '-', up to 32 characters")]
    domain: Domain = Field(description="DNS domain of the nodes' upstream names")
    timezone: TimeZone = "UTC"
    join_key: Annotated[
        str | None, Field(description="64 hex characters (256 bits); every secret derives from it", repr=False)
    ] = None
    join_key_file: Annotated[FilePath | None, Field(description="path to a file holding the join key")] = None
    dns_servers: list[IPv4] = []
    ntp_servers: list[str] = []
    description: str = ""

    @field_validator("join_key")
    @classmethod
    def _join_key_format(cls, value: str | None) -> str | None:
        if value is not None and not JOIN_KEY_RE.match(value):
            raise ValueError("the join key must be 64 lower-case hex characters (run `pvc config init` to make one)")
        return value

    @model_validator(mode="after")
    def _one_key(self) -> Cluster:
        _exactly_one(self, "join_key", "join_key_file")
        return self


class Image(Model):
    version: Annotated[
        str | None,
        Field(pattern=r"^[0-9A-Za-z.+~-]{1,64}$", description="image version the nodes must boot; unset = any"),
    ] = None


class User(Model):
    name: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")]
    ssh_keys: Annotated[list[SshKey], Field(min_length=1)]
    uid: Annotated[int | None, Field(ge=1000, le=59999)] = None
    sudo: Annotated[
        bool,
        Field(description="may become root with sudo: the break-glass path (docs/security.md); root has no login"),
    ] = False

    @field_validator("name")
    @classmethod
    def _not_system(cls, value: str) -> str:
        reserved = {
            "root",
            "daemon",
            "ceph",
            "postgres",
            "zookeeper",
            "frr",
            "libvirt-qemu",
            "nobody",
            "sshd",
        }
        if value in reserved:
            raise ValueError(f"'{value}' is a system account on the node image; choose another name")
        return value


class Nic(Model):
    name: IfName
    mtu: Mtu = 1500


class Bond(Model):
    name: IfName
    members: Annotated[list[IfName], Field(min_length=1)]
    mode: Literal["802.3ad", "active-backup", "balance-xor", "balance-alb", "balance-tlb", "balance-rr"] = "802.3ad"
    lacp_rate: Literal["slow", "fast"] | None = None
    mtu: Mtu = 1500

    @model_validator(mode="after")
    def _lacp_only_with_8023ad(self) -> Bond:
        if self.lacp_rate is not None and self.mode != "802.3ad":
            raise ValueError(f'\'lacp_rate\' applies only to mode "802.3ad", not "{self.mode}"')
        return self


class Vlan(Model):
    name: IfName
    parent: IfName
    id: Annotated[int, Field(ge=1, le=4094)]
    mtu: Mtu = 1500


class CoreNetwork(Model):
    device: Annotated[IfName, Field(description="NIC, bond or VLAN (declared under [network]) carrying this network")]
    subnet: IPv4Net
    floating_ip: Annotated[IPv4, Field(description="held by the primary coordinator")]
    gateway: IPv4 | None = None
    mtu: Mtu | None = None
    domain: Domain | None = None


CoreNetworkName = Literal["upstream", "cluster", "storage"]  # also the field names of NodeIps


class UpstreamNetwork(CoreNetwork):
    gateway: Annotated[IPv4, Field(description="the nodes' default route")]


class BridgedDevice(Model):
    device: IfName
    mtu: Mtu = 1500


class Network(Model):
    nics: list[Nic] = []
    bonds: list[Bond] = []
    vlans: list[Vlan] = []
    upstream: UpstreamNetwork
    cluster: CoreNetwork
    storage: Annotated[CoreNetwork | None, Field(description="unset: storage traffic uses the cluster network")] = None
    bridged: Annotated[BridgedDevice | None, Field(description="device that carries bridged client VLANs")] = None


class NodeIps(Model):
    upstream: IPv4 | None = None
    cluster: IPv4 | None = None
    storage: IPv4 | None = None


class Ipmi(Model):
    address: Annotated[str, Field(min_length=1, description="BMC IP address or resolvable name")]
    username: Annotated[str, Field(min_length=1)]
    password: Annotated[str | None, Field(repr=False)] = None
    password_file: FilePath | None = None
    interface: Literal["lanplus", "lan"] = "lanplus"
    port: Port = 623

    @model_validator(mode="after")
    def _one_password(self) -> Ipmi:
        _exactly_one(self, "password", "password_file")
        return self


class DiskSelector(Model):
    """Matches disks by facts that survive reboots. Every given criterion must match."""

    model: Annotated[str | None, Field(description='glob on the disk model, e.g. "INTEL SSDSC2KB*"')] = None
    serial: Annotated[str | None, Field(description="glob on the serial number")] = None
    size_min: Size | None = None
    size_max: Size | None = None
    path: Annotated[str | None, Field(description="glob on a /dev path, e.g. /dev/disk/by-path/pci-*-ata-1")] = None

    @model_validator(mode="after")
    def _criteria(self) -> DiskSelector:
        if not any(v is not None for v in (self.model, self.serial, self.size_min, self.size_max, self.path)):
            raise ValueError("a disk selector needs at least one of 'model', 'serial', 'size_min', 'size_max', 'path'")
        if self.path is not None:
            if not self.path.startswith("/dev/"):
                raise ValueError(f"'path' must be under /dev/, got '{self.path}'")
            only_path = all(v is None for v in (self.model, self.serial, self.size_min, self.size_max))
            if only_path and _KERNEL_DISK_RE.match(self.path):
                raise ValueError(
                    f"'{self.path}' is a kernel device name, which can change between boots; select by 'model', "
                    "'serial' or a size range, or use a /dev/disk/by-id/ or /dev/disk/by-path/ link"
                )
        if self.size_min is not None and self.size_max is not None and self.size_min > self.size_max:
            raise ValueError("'size_min' is larger than 'size_max'")
        return self


class DataDisk(DiskSelector):
    allow_wipe: Annotated[
        bool,
        Field(
            description="wipe the selected disk on first boot even if it is not blank: never while the node has "
            "PVCDATA on any disk, never the boot medium, a disk with a PVC* label or a Ceph OSD"
        ),
    ] = False


class OsdDisk(DiskSelector):
    count: Annotated[int | None, Field(ge=1, le=64, description="how many matching disks to use; unset = all")] = None
    weight: Annotated[float | None, Field(gt=0, le=1000)] = None


class Node(Model):
    name: Hostname
    id: Annotated[int, Field(ge=1, le=255, description="ZooKeeper server id; unique")]
    coordinator: bool = False
    macs: Annotated[list[Mac], Field(description="MAC addresses the node owns: how it finds itself at boot")] = []
    router_id: Annotated[IPv4 | None, Field(description="BGP router id; default: the cluster IP")] = None
    ip: NodeIps = NodeIps()
    ipmi: Ipmi | None = None
    data_disk: DataDisk
    osds: list[OsdDisk] = []


class BgpPeer(Model):
    address: IPv4
    asn: Asn | None = None
    description: str = ""


class Bgp(Model):
    asn: Asn
    routers: list[BgpPeer] = []


class PoolDefaults(Model):
    size: PoolCopies = pools.DEFAULT_SIZE
    min_size: PoolCopies = pools.DEFAULT_MIN_SIZE
    pgs: PoolPgs = pools.DEFAULT_PGS


class Pool(Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")]
    size: PoolCopies | None = None
    min_size: PoolCopies | None = None
    pgs: PoolPgs | None = None


class Ceph(Model):
    osd_memory_target: Annotated[Size, Field(ge=939524096, description="bytes per OSD; Ceph's minimum is 896M")] = (
        4 * 1024**3
    )
    pool_defaults: PoolDefaults = PoolDefaults()
    pools: list[Pool] = []
    upload_max: (
        Annotated[Size, Field(ge=1, description="the largest image a volume upload may send or expand to")] | None
    ) = None

    @field_validator("pools")
    @classmethod
    def _pgs_power_of_two(cls, pools: list[Pool]) -> list[Pool]:
        for pool in pools:
            if pool.pgs is not None and pool.pgs & (pool.pgs - 1):
                raise ValueError(f"pool '{pool.name}': pgs must be a power of two, got {pool.pgs}")
        return pools


class ZooKeeper(Model):
    heap: Size = 512 * 1024**2
    tick_time_ms: Annotated[int, Field(ge=100, le=10000)] = 1000
    session_timeout_ms: Annotated[
        int, Field(ge=200, le=200000, description="pvcd's ZooKeeper session; how fast a dead primary is replaced")
    ] = 3000
    init_limit: Annotated[int, Field(ge=1, le=100)] = 10
    sync_limit: Annotated[int, Field(ge=1, le=100)] = 5
    client_port: Port = 2181


class Patroni(Model):
    ttl: Annotated[int, Field(ge=2, le=600, description="leader lock lifetime, seconds")] = 20
    loop_wait: Annotated[int, Field(ge=1, le=300)] = 5
    retry_timeout: Annotated[int, Field(ge=1, le=300)] = 5
    maximum_lag_on_failover: Annotated[int, Field(ge=0)] = 1048576
    postgres_port: Port = 5432
    rest_port: Port = 8008


API_KEY_MIN_LENGTH = 32  # characters of a key given in cluster.toml (`pvc cluster key add` makes 43)
INITIAL_KEY_NAME = "initial"  # the key derived from the join key; revocable with `pvc cluster key revoke initial`


class ApiKey(Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    role: Annotated[
        ApiRole,
        Field(description=f"what the key may do: read-only, operator or admin; unset: {DEFAULT_API_ROLE}"),
    ] = DEFAULT_API_ROLE
    key: Annotated[str | None, Field(min_length=API_KEY_MIN_LENGTH, repr=False)] = None
    key_file: FilePath | None = None
    sha256: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the key")] = None

    @field_validator("name")
    @classmethod
    def _not_initial(cls, value: str) -> str:
        if value == INITIAL_KEY_NAME:
            raise ValueError(
                f"'{INITIAL_KEY_NAME}' is the key derived from the join key; name this key otherwise (to stop the "
                f"derived key, run `pvc cluster key revoke {INITIAL_KEY_NAME}`)"
            )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ApiKey:
        _exactly_one(self, "key", "key_file", "sha256")
        return self


API_PREFIX = "/api/v1"  # every route of the API is under http(s)://node:[api].port/api/v1 (pvc.api; formation's probe)


class Api(Model):
    port: Port = 7370
    workers: Annotated[int, Field(ge=1, le=64)] = 2
    tls_cert_file: Annotated[
        FilePath | None, Field(description="your own certificate (PEM); unset: one issued by the cluster CA")
    ] = None
    tls_key_file: FilePath | None = None
    insecure_http: Annotated[
        bool, Field(description="serve plain HTTP instead of HTTPS: API keys cross the network in clear")
    ] = False
    keys: list[ApiKey] = []

    @model_validator(mode="after")
    def _tls_pair(self) -> Api:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS needs both 'tls_cert_file' and 'tls_key_file'")
        if self.insecure_http and self.tls_cert_file is not None:
            raise ValueError("'insecure_http' serves plain HTTP: it takes no 'tls_cert_file' or 'tls_key_file'")
        return self


class Firewall(Model):
    """The node firewall (nftables, docs/security.md): which sources may reach PVC's services besides the cluster's
    own nodes. Every list is of IPv4 subnets; a single host is "192.0.2.7/32"."""

    enabled: Annotated[
        bool, Field(description="false: no node firewall at all, every service is open to every network (not advised)")
    ] = True
    ssh: Annotated[
        list[IPv4Net] | None,
        Field(description="the admin networks SSH is accepted from; unset: the upstream subnet; [] : nowhere"),
    ] = None
    api: Annotated[list[IPv4Net], Field(description="more sources for the API, beyond the upstream network")] = []
    bgp: Annotated[list[IPv4Net], Field(description="more BGP speakers, beyond the nodes and [bgp] routers")] = []
    ceph: Annotated[
        list[IPv4Net], Field(description="more Ceph clients (mons, OSDs, mgrs), e.g. outside RBD users")
    ] = []
    zookeeper: Annotated[list[IPv4Net], Field(description="more ZooKeeper clients (client port only)")] = []
    postgresql: Annotated[list[IPv4Net], Field(description="more PostgreSQL clients")] = []
    patroni: Annotated[list[IPv4Net], Field(description="more clients of Patroni's REST API (monitoring)")] = []


class Timers(Model):
    keepalive_interval: Annotated[int, Field(ge=1, le=60, description="seconds between keepalives")] = 1
    dead_after: Annotated[int, Field(ge=2, le=100, description="missed keepalives before a node is dead")] = 4
    vm_shutdown_timeout: Annotated[int, Field(ge=1, le=3600, description="seconds before shutdown → destroy")] = 180
    watchdog: Annotated[
        int,
        Field(
            ge=5,
            le=3600,
            description="seconds a pvcd controller may go without progress: then a primary steps down, and "
            "systemd restarts pvcd (WatchdogSec)",
        ),
    ] = 30
    libvirt_restart_after: Annotated[
        int, Field(ge=0, le=86400, description="seconds of a libvirtd that answers nothing before pvcd restarts it")
    ] = 300

    @model_validator(mode="after")
    def _watchdog_above_keepalive(self) -> Timers:
        if self.watchdog < 3 * self.keepalive_interval:
            raise ValueError(
                f"watchdog ({self.watchdog}s) must be at least 3 × keepalive_interval "
                f"({3 * self.keepalive_interval}s): pvcd tells systemd it is alive once per keepalive"
            )
        return self


class Fencing(Model):
    enabled: bool = True
    on_success: Annotated[
        Literal["migrate", "none"],
        Field(description="after a confirmed power-off: restart its VMs elsewhere?"),
    ] = "migrate"
    on_failure: Annotated[
        Literal["none", "migrate"],
        Field(description="after a failed fence; 'migrate' risks running a VM twice"),
    ] = "none"
    power_on_after: Annotated[bool, Field(description="power the node back on after a confirmed off")] = True
    max_concurrent: Annotated[int, Field(ge=1, le=64, description="fences in flight at once")] = 1
    retry_after: Annotated[
        int, Field(ge=1, le=3600, description="seconds before a failed fence is tried again (doubling, up to 300)")
    ] = 10


class Migration(Model):
    selector: Selector = "mem"
    method: MigrationMethod = "live"
    max_downtime_ms: Annotated[int, Field(ge=1, le=60000)] = 300
    timeout: Annotated[
        int, Field(ge=1, le=86400, description="seconds a live migration may take before it is aborted")
    ] = 300
    bandwidth_mib: Annotated[int, Field(ge=0, le=1_000_000, description="MiB/s a migration may use; 0: no cap")] = 0


class Retention(Model):
    tasks_per_kind: Annotated[
        int, Field(ge=1, le=100_000, description="finished tasks kept per kind (flush, migrate, ...)")
    ] = 100
    osd_requests: Annotated[int, Field(ge=1, le=100_000, description="finished OSD requests kept")] = 50


class Vm(Model):
    accelerator: Annotated[
        Literal["auto", "kvm", "tcg"],
        Field(
            description="how nodes run VMs: 'auto' = KVM where /dev/kvm is usable and the node is not a nested "
            "PVM guest, else TCG (emulation)"
        ),
    ] = "auto"


class DhcpRange(Model):
    start: IPv4
    end: IPv4


class Dns(Model):
    domain: Annotated[
        Domain | None, Field(description="the network's DNS domain; default: <name>.<cluster domain>")
    ] = None
    servers: Annotated[list[IPv4], Field(description="upstream name servers; default: [cluster] dns_servers")] = []


class Reservation(Model):
    """A static DHCP lease: this MAC always gets this address (and name)."""

    mac: Mac
    ip: IPv4
    hostname: Annotated[
        str, Field(pattern=networks.HOSTNAME_RE.pattern, description="a host name (one DNS label); '' for none")
    ] = ""

    @field_validator("hostname", mode="before")
    @classmethod
    def _hostname(cls, value: object) -> object:
        if isinstance(value, str) and value and not networks.HOSTNAME_RE.match(value):
            raise ValueError(f"'{value}' is not a host name (lower-case letters, digits and '-', 1-63 characters)")
        return value


AclDescription = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="the rule's name, unique in its network")
]


class AclFields(Model):
    """One firewall rule of a managed network. Rules run in `order` (then by description); the first that matches
    decides; traffic no rule decides gets the network's acl_policy. (The fields; AclRule adds the cross-field rules,
    which the API runs itself to name the field.)"""

    description: AclDescription
    direction: Annotated[AclDirection, Field(description="in: to the network's VMs; out: from them")] = "in"
    action: AclAction
    order: Annotated[int | None, Field(ge=0, le=1_000_000, description="lower runs first; unset: after the rest")] = (
        None
    )
    protocol: AclProtocol = "any"
    source: Annotated[str | None, Field(description="an address or subnet (IPv4 or IPv6); unset: any")] = None
    destination: Annotated[str | None, Field(description="an address or subnet (IPv4 or IPv6); unset: any")] = None
    ports: Annotated[str | None, Field(description='destination ports, tcp/udp only: "22", "80,443", "8000-8100"')] = (
        None
    )


class AclRule(AclFields):
    @model_validator(mode="after")
    def _renders(self) -> AclRule:
        for where, message in networks.rule_problems(self):
            raise ValueError(f"{'.'.join(str(p) for p in where)}: {message}")
        return self


class ClientNetwork(Model):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")]
    type: Literal["bridged", "managed"]
    description: str = ""
    vlan: Annotated[int | None, Field(ge=1, le=4094, description="bridged: 802.1q id on [network.bridged]")] = None
    vni: Annotated[int | None, Field(ge=1, le=16777215, description="managed: VXLAN network identifier")] = None
    mtu: Annotated[Mtu | None, Field(description="unset or too large: the most the underlay allows")] = None
    subnet: IPv4Net | None = None
    gateway: IPv4 | None = None
    subnet6: Annotated[IPv6Net | None, Field(description="managed: an IPv6 /64 (SLAAC and DHCPv6 by the gateway)")] = (
        None
    )
    gateway6: IPv6 | None = None
    dhcp: Annotated[DhcpRange | None, Field(description="managed: DHCPv4 on this range; unset: no DHCPv4")] = None
    dns: Dns | None = None
    nat: Annotated[bool, Field(description="managed: masquerade the subnet to the upstream network")] = False
    reservations: Annotated[list[Reservation], Field(description="managed: static DHCP leases")] = []
    acl_policy: Annotated[AclPolicy, Field(description="managed: what happens to traffic no ACL rule decides")] = (
        "accept"
    )
    acls: Annotated[list[AclRule], Field(description="managed: firewall rules (docs/networks.md)")] = []

    _MANAGED_ONLY = ("vni", "subnet", "gateway", "subnet6", "gateway6", "dhcp", "dns")

    @property
    def number(self) -> int:
        """The network's VNI: a managed network's VXLAN id, a bridged one's VLAN id (its bridge is vmbr<N>)."""
        number = self.vni if self.type == "managed" else self.vlan
        assert number is not None
        return number

    @model_validator(mode="after")
    def _per_type(self) -> ClientNetwork:
        if self.type == "bridged":
            if self.vlan is None:
                raise ValueError("a bridged network needs 'vlan' (1-4094)")
            extra = [n for n in self._MANAGED_ONLY if getattr(self, n) is not None]
            extra += [n for n in ("reservations", "acls") if getattr(self, n)]
            extra += ["nat"] if self.nat else []
            if extra:
                raise ValueError(
                    f"a bridged network takes no {', '.join(repr(n) for n in extra)} (PVC only bridges it)"
                )
        else:
            missing = [n for n in ("vni", "subnet", "gateway") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"a managed network needs {', '.join(repr(n) for n in missing)}")
            if self.vlan is not None:
                raise ValueError("a managed network is a VXLAN; it takes 'vni', not 'vlan'")
            names = [r.description for r in self.acls]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"ACL descriptions must be unique in a network: {', '.join(twice)}")
        return self


class ClusterFile(Model):
    """The whole cluster.toml."""

    schema_version: Annotated[Literal[1], Field(alias="schema", description="cluster.toml format version")]
    cluster: Cluster
    image: Image = Image()
    users: list[User] = []
    network: Network
    nodes: Annotated[list[Node], Field(min_length=1)]
    bgp: Bgp
    ceph: Ceph = Ceph()
    zookeeper: ZooKeeper = ZooKeeper()
    patroni: Patroni = Patroni()
    api: Api = Api()
    firewall: Firewall = Firewall()
    timers: Timers = Timers()
    fencing: Fencing = Fencing()
    migration: Migration = Migration()
    vm: Vm = Vm()
    retention: Retention = Retention()
    client_networks: list[ClientNetwork] = []

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    @property
    def coordinators(self) -> list[Node]:
        return [n for n in self.nodes if n.coordinator]

    def zookeeper_hosts(self) -> str:
        """The ZooKeeper connection string: every coordinator's cluster IP and the client port."""
        return ",".join(f"{n.ip.cluster}:{self.zookeeper.client_port}" for n in self.coordinators)

    def postgres_hosts(self) -> str:
        """PostgreSQL's members (every coordinator's cluster IP and the Patroni-managed port), as the provisioner's
        connections list them for libpq to find the leader."""
        return ",".join(f"{n.ip.cluster}:{self.patroni.postgres_port}" for n in self.coordinators)

    def core_networks(self) -> list[tuple[CoreNetworkName, CoreNetwork]]:
        """The networks every node sits on, by name: upstream, cluster and, when declared, storage."""
        nets: list[tuple[CoreNetworkName, CoreNetwork]] = [
            ("upstream", self.network.upstream),
            ("cluster", self.network.cluster),
        ]
        if self.network.storage is not None:
            nets.append(("storage", self.network.storage))
        return nets

    @property
    def storage_network(self) -> CoreNetwork:
        """The network Ceph uses: [network.storage], or the cluster network when none is declared."""
        return self.network.storage or self.network.cluster

    def storage_ip(self, node: Node) -> IPv4 | None:
        return node.ip.storage if self.network.storage is not None else node.ip.cluster
