"""Cross-field checks of a cluster.toml that passed the schema.

Each check is a small function that yields Findings; `run_checks` runs them all. A Finding points at one key
path; a conflict between two keys also names the other key (`other`), and the loader reports it at whichever of
the two stands later in the file, naming the earlier one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from pvc.config import lab_hardware, networks
from pvc.config.locate import KeyPath
from pvc.config.schema import Bond, BridgedDevice, ClusterFile, CoreNetwork, DiskSelector, Nic, Vlan

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    path: KeyPath
    message: str
    severity: Severity = "error"
    # For a conflict between two keys: the other key, and how to describe each side in a message.
    other: KeyPath | None = None
    label: str = ""
    other_label: str = ""


def conflict(value: object, a: KeyPath, a_label: str, b: KeyPath, b_label: str) -> Finding:
    """Two keys that may not hold the same value. The loader words the message around which one is later."""
    return Finding(path=a, message=str(value), other=b, label=a_label, other_label=b_label)


Check = Callable[[ClusterFile], Iterator[Finding]]
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


def run_checks(cfg: ClusterFile) -> list[Finding]:
    return [finding for fn in CHECKS for finding in fn(cfg)]


def _node_path(i: int, *rest: str | int) -> KeyPath:
    return ("nodes", i, *rest)


# -- nodes ---------------------------------------------------------------------------------------------------


@check
def unique_node_facts(cfg: ClusterFile) -> Iterator[Finding]:
    """Node names, ids, router ids, MACs and IPMI addresses are each unique."""
    seen: dict[tuple[str, object], tuple[KeyPath, str]] = {}

    def claim(kind: str, value: object, path: KeyPath, label: str) -> Iterator[Finding]:
        key = (kind, value)
        if key in seen:
            other_path, other_label = seen[key]
            yield conflict(value, path, label, other_path, other_label)
        else:
            seen[key] = (path, label)

    for i, node in enumerate(cfg.nodes):
        yield from claim("name", node.name, _node_path(i, "name"), "a node name")
        yield from claim("id", node.id, _node_path(i, "id"), f"the id of node '{node.name}'")
        if node.router_id is not None:
            path = _node_path(i, "router_id")
            yield from claim("router", node.router_id, path, f"the BGP router id of node '{node.name}'")
        for j, mac in enumerate(node.macs):
            yield from claim("mac", mac, _node_path(i, "macs", j), f"a MAC address of node '{node.name}'")
        if node.ipmi is not None:
            yield from claim(
                "ipmi",
                node.ipmi.address,
                _node_path(i, "ipmi", "address"),
                f"the IPMI address of node '{node.name}'",
            )
    # A node without router_id uses its cluster IP, whose uniqueness node_ips checks; an explicit router_id
    # must not equal another node's defaulted one either.
    for i, node in enumerate(cfg.nodes):
        if node.router_id is None and node.ip.cluster is not None:
            key = ("router", node.ip.cluster)
            if key in seen and seen[key][0][-1] == "router_id":
                other_path, other_label = seen[key]
                yield conflict(
                    node.ip.cluster,
                    _node_path(i, "ip", "cluster"),
                    f"the BGP router id (cluster IP) of node '{node.name}'",
                    other_path,
                    other_label,
                )


@check
def node_ips(cfg: ClusterFile) -> Iterator[Finding]:
    """Every node IP is unique, inside its network's subnet, and not the subnet's network/broadcast address."""
    seen: dict[ipaddress.IPv4Address, tuple[KeyPath, str]] = {}
    nets = dict(cfg.core_networks())
    for i, node in enumerate(cfg.nodes):
        for net_name in ("upstream", "cluster", "storage"):
            ip = getattr(node.ip, net_name)
            if ip is None:
                continue
            path = _node_path(i, "ip", net_name)
            net = nets.get(net_name)
            if net is None:
                yield Finding(
                    path,
                    "there is no [network.storage], so storage traffic uses the cluster network and the cluster IP; "
                    "remove 'ip.storage' or declare [network.storage]",
                )
                continue
            yield from _inside(ip, net.subnet, path, f"the {net_name} IP of node '{node.name}'", net_name)
            label = f"the {net_name} IP of node '{node.name}'"
            if ip in seen:
                other_path, other_label = seen[ip]
                yield conflict(ip, path, label, other_path, other_label)
            else:
                seen[ip] = (path, label)
    # floating IPs and gateways against node IPs
    for net_name, net in cfg.core_networks():
        for key in ("floating_ip", "gateway"):
            ip = getattr(net, key)
            if ip is None:
                continue
            path = ("network", net_name, key)
            what = f"the {net_name} network's {key.replace('_', ' ')}"
            yield from _inside(ip, net.subnet, path, what, net_name)
            if ip in seen:
                other_path, other_label = seen[ip]
                yield conflict(ip, path, what, other_path, other_label)
            else:
                seen[ip] = (path, what)


def _inside(
    ip: ipaddress.IPv4Address, subnet: ipaddress.IPv4Network, path: KeyPath, what: str, net_name: str
) -> Iterator[Finding]:
    for where, message in networks.inside(ip, subnet, path, what, net_name):
        yield Finding(where, message)


@check
def required_node_ips(cfg: ClusterFile) -> Iterator[Finding]:
    """Every node has a cluster IP; coordinators also an upstream IP, and a storage IP where that network exists."""
    for i, node in enumerate(cfg.nodes):
        role = "coordinator" if node.coordinator else "node"
        needed = ["cluster"]
        if node.coordinator:
            needed.append("upstream")
        if cfg.network.storage is not None and (node.coordinator or node.osds):
            needed.append("storage")
        for net_name in needed:
            if getattr(node.ip, net_name) is None:
                why = {
                    "cluster": "every node reaches ZooKeeper and its peers over the cluster network",
                    "upstream": "coordinators serve the API and hold the floating IPs on the upstream network",
                    "storage": "Ceph mons and OSDs talk over the storage network",
                }[net_name]
                yield Finding(_node_path(i, "ip"), f"{role} '{node.name}' needs 'ip.{net_name}': {why}")


@check
def coordinators(cfg: ClusterFile) -> Iterator[Finding]:
    """An odd number of coordinators: 1 is a lab, 3 or 5 are production; an even count cannot keep a quorum."""
    coords = [(i, n) for i, n in enumerate(cfg.nodes) if n.coordinator]
    if not coords:
        yield Finding(("nodes",), "no node has 'coordinator = true'; mark 1 (lab) or 3 or 5 (production) nodes")
        return
    last_i = coords[-1][0]
    names = ", ".join(f"'{n.name}'" for _, n in coords)
    if len(coords) == 1:
        yield Finding(
            _node_path(last_i, "coordinator"),
            f"only one coordinator ({names}): fine for a lab, but the cluster has no quorum redundancy",
            severity="warning",
        )
    elif len(coords) % 2 == 0:
        yield Finding(
            _node_path(last_i, "coordinator"),
            f"{len(coords)} coordinators ({names}): use an odd number (3 or 5); with an even number a split "
            "leaves no majority, and it tolerates no more failures than one fewer",
        )


@check
def fencing_needs_ipmi(cfg: ClusterFile) -> Iterator[Finding]:
    if not cfg.fencing.enabled or len(cfg.nodes) < 2:
        return
    for i, node in enumerate(cfg.nodes):
        if node.ipmi is None:
            yield Finding(
                _node_path(i),
                f"fencing is enabled but node '{node.name}' has no [nodes.ipmi]: without it a dead node cannot be "
                "powered off and its VMs never restart elsewhere; add its BMC or set fencing.enabled = false",
            )
    if cfg.fencing.on_failure == "migrate":
        yield Finding(
            ("fencing", "on_failure"),
            "on_failure = 'migrate' restarts a dead node's VMs even when its BMC did not confirm the power-off: "
            "a node that is only cut off may still run them, and a VM whose disks are not RBD (with their locks "
            "broken) then runs twice",
            "warning",
        )


@check
def disks(cfg: ClusterFile) -> Iterator[Finding]:
    """The data disk selector and an OSD selector must not be the same selector."""
    for i, node in enumerate(cfg.nodes):
        for j, osd in enumerate(node.osds):
            if _same_selector(osd, node.data_disk):
                yield Finding(
                    _node_path(i, "osds", j),
                    f"this OSD selector of node '{node.name}' is the same as its data_disk selector; "
                    "they would pick the same disk",
                )


def _same_selector(a: DiskSelector, b: DiskSelector) -> bool:
    keys = ("model", "serial", "size_min", "size_max", "path")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


# -- physical network ----------------------------------------------------------------------------------------


@check
def interfaces(cfg: ClusterFile) -> Iterator[Finding]:
    """Interface names unique; bond members exist and are used once; VLAN parents exist and carry the MTU."""
    net = cfg.network
    declared: dict[str, tuple[KeyPath, int]] = {}  # name -> (path, mtu)
    kinds: list[tuple[str, Sequence[Nic | Bond | Vlan]]] = [
        ("nics", net.nics),
        ("bonds", net.bonds),
        ("vlans", net.vlans),
    ]
    for kind, items in kinds:
        for i, item in enumerate(items):
            path: KeyPath = ("network", kind, i, "name")
            if item.name in declared:
                yield conflict(item.name, path, "an interface name", declared[item.name][0], "an interface name")
            else:
                declared[item.name] = (path, item.mtu)
    used_by: dict[str, tuple[KeyPath, str]] = {}
    for i, bond in enumerate(net.bonds):
        for j, member in enumerate(bond.members):
            path = ("network", "bonds", i, "members", j)
            if member not in {n.name for n in net.nics}:
                yield Finding(path, f"bond '{bond.name}' member '{member}' is not a NIC declared in [[network.nics]]")
            elif member in used_by:
                yield conflict(member, path, f"a member of bond '{bond.name}'", *used_by[member])
            else:
                used_by[member] = (path, f"a member of bond '{bond.name}'")
    vlan_ids: dict[tuple[str, int], tuple[KeyPath, str]] = {}
    for i, vlan in enumerate(net.vlans):
        path = ("network", "vlans", i, "parent")
        if vlan.parent not in declared or vlan.parent in {v.name for v in net.vlans}:
            yield Finding(path, f"VLAN '{vlan.name}' parent '{vlan.parent}' is not a declared NIC or bond")
            continue
        if vlan.parent in used_by:
            yield Finding(path, f"'{vlan.parent}' is a bond member; put VLAN '{vlan.name}' on the bond instead")
        parent_mtu = declared[vlan.parent][1]
        if vlan.mtu > parent_mtu:
            yield Finding(
                ("network", "vlans", i, "mtu"),
                f"VLAN '{vlan.name}' MTU {vlan.mtu} is larger than its parent '{vlan.parent}' MTU {parent_mtu}",
            )
        key = (vlan.parent, vlan.id)
        id_path: KeyPath = ("network", "vlans", i, "id")
        label = f"the VLAN id of '{vlan.name}' on '{vlan.parent}'"
        if key in vlan_ids:
            yield conflict(vlan.id, id_path, label, *vlan_ids[key])
        else:
            vlan_ids[key] = (id_path, label)
    carriers: list[tuple[str, CoreNetwork | BridgedDevice]] = [*cfg.core_networks()]
    if net.bridged:
        carriers.append(("bridged", net.bridged))
    for net_name, core in carriers:
        path = ("network", net_name, "device")
        if core.device not in declared:
            yield Finding(path, f"device '{core.device}' is not declared in [[network.nics]], bonds or vlans")
            continue
        if core.device in used_by:
            yield Finding(path, f"'{core.device}' is a bond member; use the bond")
        mtu = core.mtu
        if mtu is not None and mtu > declared[core.device][1]:
            yield Finding(
                ("network", net_name, "mtu"),
                f"MTU {mtu} is larger than device '{core.device}' MTU {declared[core.device][1]}",
            )
    # bridged client VLANs share the bridged device with any physical VLAN declared on it
    if net.bridged is not None:
        for i, cn in enumerate(cfg.client_networks):
            if cn.type != "bridged" or cn.vlan is None:
                continue
            key = (net.bridged.device, cn.vlan)
            id_path = ("client_networks", i, "vlan")
            label = f"the VLAN id of client network '{cn.name}' on '{net.bridged.device}'"
            if key in vlan_ids:
                yield conflict(cn.vlan, id_path, label, *vlan_ids[key])
            else:
                vlan_ids[key] = (id_path, label)
            if cn.mtu is not None and cn.mtu > net.bridged.mtu:
                yield Finding(
                    ("client_networks", i, "mtu"),
                    f"MTU {cn.mtu} is larger than the bridged device MTU {net.bridged.mtu}",
                )


@check
def subnets_disjoint(cfg: ClusterFile) -> Iterator[Finding]:
    subnets: list[tuple[KeyPath, str, ipaddress.IPv4Network]] = [
        (("network", name, "subnet"), f"the {name} network", core.subnet) for name, core in cfg.core_networks()
    ]
    for i, cn in enumerate(cfg.client_networks):
        if cn.subnet is not None:
            subnets.append((("client_networks", i, "subnet"), f"client network '{cn.name}'", cn.subnet))
    for a in range(len(subnets)):
        for b in range(a):
            if subnets[a][2].overlaps(subnets[b][2]):
                yield conflict(
                    f"subnet {subnets[a][2]} overlaps {subnets[b][2]}",
                    subnets[a][0],
                    subnets[a][1],
                    subnets[b][0],
                    subnets[b][1],
                )


@check
def client_networks(cfg: ClusterFile) -> Iterator[Finding]:
    names: dict[str, KeyPath] = {}
    vnis: dict[int, tuple[KeyPath, str]] = {}
    for i, cn in enumerate(cfg.client_networks):
        base: KeyPath = ("client_networks", i)
        if cn.name in names:
            yield conflict(cn.name, (*base, "name"), "a client network name", names[cn.name], "a client network name")
        names.setdefault(cn.name, (*base, "name"))
        if cn.type == "bridged" and cfg.network.bridged is None:
            yield Finding((*base, "type"), f"bridged network '{cn.name}' needs [network.bridged] with its device")
        # a bridged network's VLAN id is its VNI: both name the bridge vmbr<N> on every node
        number, key = (cn.vni, "vni") if cn.vni is not None else (cn.vlan, "vlan")
        if number is not None:
            label = f"the {'VNI' if key == 'vni' else 'VLAN id'} of client network '{cn.name}'"
            if number in vnis:
                yield conflict(number, (*base, key), label, *vnis[number])
            else:
                vnis[number] = ((*base, key), label)
        if cn.subnet is None:
            continue
        dhcp = (cn.dhcp.start, cn.dhcp.end) if cn.dhcp is not None else None
        for where, message in networks.address_problems(
            cn.name, cn.subnet, cn.gateway, dhcp, cn.reservations, cn.subnet6, cn.gateway6
        ):
            yield Finding((*base, *where), message)


# -- services ------------------------------------------------------------------------------------------------


@check
def ceph_pools(cfg: ClusterFile) -> Iterator[Finding]:
    osd_nodes = [n.name for n in cfg.nodes if n.osds]
    defaults = cfg.ceph.pool_defaults
    yield from _pool_sizes(("ceph", "pool_defaults"), "pool_defaults", defaults.size, defaults.min_size, None)
    seen: dict[str, KeyPath] = {}
    for i, pool in enumerate(cfg.ceph.pools):
        base: KeyPath = ("ceph", "pools", i)
        if pool.name in seen:
            yield conflict(pool.name, (*base, "name"), "a pool name", seen[pool.name], "a pool name")
        seen.setdefault(pool.name, (*base, "name"))
        size = pool.size if pool.size is not None else defaults.size
        min_size = pool.min_size if pool.min_size is not None else defaults.min_size
        if pool.size is not None or pool.min_size is not None:  # else pool_defaults, checked above
            yield from _pool_sizes(base, f"pool '{pool.name}'", size, min_size, pool)
        elif size == 1:
            yield Finding(
                (*base, "name"),
                f"pool '{pool.name}' keeps a single copy: a lost disk loses its data (lab use only)",
                "warning",
            )
        if size > len(osd_nodes):
            where = (*base, "size") if pool.size is not None else (*base, "name")
            hosts = ", ".join(osd_nodes) if osd_nodes else "none"
            yield Finding(
                where,
                f"pool '{pool.name}' keeps {size} copies on different nodes, but only {len(osd_nodes)} node(s) have "
                f"OSDs ({hosts}); lower its size or add [[nodes.osds]]",
            )


def _pool_sizes(base: KeyPath, what: str, size: int, min_size: int, pool: object) -> Iterator[Finding]:
    explicit_min = pool is None or getattr(pool, "min_size", None) is not None
    where = (*base, "min_size") if explicit_min else (*base, "name")
    if size == 1:
        if min_size != 1:
            yield Finding(where, f"{what}: min_size {min_size} is larger than size 1")
        elif pool is not None:
            yield Finding(
                (*base, "name"),
                f"{what} keeps a single copy: a lost disk loses its data (lab use only)",
                "warning",
            )
    elif min_size >= size:
        yield Finding(
            where,
            f"{what}: min_size {min_size} must be less than size {size}, or losing one copy stops all I/O "
            f"(use min_size {size - 1})",
        )


@check
def patroni_timing(cfg: ClusterFile) -> Iterator[Finding]:
    """Patroni's ttl is a ZooKeeper session timeout, which ZooKeeper clamps to 2-20 ticks."""
    p, zk = cfg.patroni, cfg.zookeeper
    low, high = 2 * zk.tick_time_ms / 1000, 20 * zk.tick_time_ms / 1000
    if not low <= p.ttl <= high:
        yield Finding(
            ("patroni", "ttl"),
            f"ttl {p.ttl}s is outside the session timeouts ZooKeeper grants with tick_time_ms "
            f"{zk.tick_time_ms} ({low:g}-{high:g}s); change ttl or zookeeper.tick_time_ms",
        )
    if not 2 * zk.tick_time_ms <= zk.session_timeout_ms <= 20 * zk.tick_time_ms:
        yield Finding(
            ("zookeeper", "session_timeout_ms"),
            f"session_timeout_ms {zk.session_timeout_ms} is outside what ZooKeeper grants with tick_time_ms "
            f"{zk.tick_time_ms} ({2 * zk.tick_time_ms}-{20 * zk.tick_time_ms} ms)",
        )
    if p.loop_wait + 2 * p.retry_timeout > p.ttl:
        yield Finding(
            ("patroni", "ttl"),
            f"ttl {p.ttl}s must be at least loop_wait + 2 × retry_timeout = {p.loop_wait + 2 * p.retry_timeout}s",
        )


@check
def users(cfg: ClusterFile) -> Iterator[Finding]:
    if not cfg.users:
        yield Finding(("cluster",), "no [[users]]: nobody can log in to the nodes over SSH", "warning")
    seen: dict[str, KeyPath] = {}
    for i, user in enumerate(cfg.users):
        path: KeyPath = ("users", i, "name")
        if user.name in seen:
            yield conflict(user.name, path, "a user name", seen[user.name], "a user name")
        seen.setdefault(user.name, path)


@check
def bgp(cfg: ClusterFile) -> Iterator[Finding]:
    node_ips = {ip for n in cfg.nodes for ip in (n.ip.upstream, n.ip.cluster, n.ip.storage) if ip}
    for i, peer in enumerate(cfg.bgp.routers):
        if peer.address in node_ips:
            yield Finding(("bgp", "routers", i, "address"), f"{peer.address} is a node IP, not an upstream router")


@check
def firewall(cfg: ClusterFile) -> Iterator[Finding]:
    fw = cfg.firewall
    if not fw.enabled:
        yield Finding(
            ("firewall", "enabled"),
            "the node firewall is off: ZooKeeper, Ceph, PostgreSQL, Patroni and the API are open to every network "
            "the nodes are on (docs/security.md)",
            "warning",
        )
        return
    for key in ("zookeeper", "ceph", "postgresql", "patroni"):
        for i, net in enumerate(getattr(fw, key)):
            if net.prefixlen == 0:
                yield Finding(
                    ("firewall", key, i),
                    f"{net} opens {key} to every address: name the networks that need it",
                    "warning",
                )


@check
def api(cfg: ClusterFile) -> Iterator[Finding]:
    if cfg.api.insecure_http:
        yield Finding(
            ("api", "insecure_http"),
            "the API serves plain HTTP: API keys cross the upstream network in clear (docs/security.md)",
            "warning",
        )
    seen: dict[str, KeyPath] = {}
    for i, key in enumerate(cfg.api.keys):
        path: KeyPath = ("api", "keys", i, "name")
        if key.name in seen:
            yield conflict(key.name, path, "an API key name", seen[key.name], "an API key name")
        seen.setdefault(key.name, path)
        if "role" not in key.model_fields_set:
            yield Finding(
                ("api", "keys", i),
                f"API key '{key.name}' names no role, so it gets '{key.role}': write role = \"read-only\", "
                '"operator" or "admin"',
                "warning",
            )


# Join keys printed in PVC's own example files: public, so they protect nothing. Allowed only in a cluster whose
# networks are all the lab's documentation subnets (pvc-lab), which no real network uses; tests/unit checks that every
# example's key is listed here.
PUBLISHED_JOIN_KEYS = {
    "3f6a0c1e9b2d4f5a8c7e6d5b4a3928171605f4e3d2c1b0a99887766554433221": "examples/production-3node.toml",
    "e43d2acbd3465f93dc5cb40cbb9a725d62e589fd770819b85b7ee5c6d7adbac4": "examples/production-5node.toml",
    "d030b4085b355457d02261a930f6a672131203c3d0bc56e3909367e2b22d29df": "the lab's lab-1node.toml",
    "0364221b7440dbc4359db57e38152582fbb40d62e11bf9b42400b80fa260d932": "the lab's lab-3node.toml",
}


def is_lab(cfg: ClusterFile) -> bool:
    """Whether every network of the cluster is one of pvc-lab's documentation subnets (TEST-NET-1/2/3)."""
    lab_nets = {ipaddress.IPv4Network(f"{prefix}.0/24") for prefix in lab_hardware.NETS.values()}
    return all(any(net.subnet.subnet_of(lab) for lab in lab_nets) for _, net in cfg.core_networks())


def published_key_problem(cfg: ClusterFile, join_key: str) -> str | None:
    """Why `join_key` must not be used by this cluster (it is published in an example), or None."""
    where = PUBLISHED_JOIN_KEYS.get(join_key)
    if where is None or is_lab(cfg):
        return None
    return (
        f"this join key is published in {where}: anyone can derive every secret of the cluster from it; make a "
        "new one with `pvc config init` (or `python3 -c 'import secrets; print(secrets.token_hex(32))'`)"
    )


@check
def published_join_key(cfg: ClusterFile) -> Iterator[Finding]:
    if cfg.cluster.join_key is not None and (why := published_key_problem(cfg, cfg.cluster.join_key)):
        yield Finding(("cluster", "join_key"), why)
