"""`pvc config init`: a valid, commented cluster.toml to start from.

Two flavours: production (placeholders an administrator replaces: MACs, disk models, BMC passwords) and lab
(the virtual hardware `pvc-lab` provides: known MACs, TEST-NET addresses that live only inside the lab's network
namespaces, disks selected by the serials the lab gives them, simulated BMCs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pvc.config import lab_hardware as hw
from pvc.config.schema import Timers


@dataclass(frozen=True)
class Plan:
    nodes: int
    lab: bool

    @property
    def coordinators(self) -> int:
        if self.nodes >= 7:
            return 5
        return 3 if self.nodes >= 3 else 1

    @property
    def pool_size(self) -> int:
        return min(3, self.nodes)


def render(plan: Plan, join_key: str, name: str | None = None) -> str:
    if not 1 <= plan.nodes <= 64:
        raise ValueError("--nodes must be between 1 and 64")
    name = name or ("lab" if plan.lab else "pvc1")
    out: list[str] = []
    w = out.append
    kind = "lab" if plan.lab else "production"
    w(f"# PVC cluster.toml: a {plan.nodes}-node {kind} cluster, written by `pvc config init`.")
    w("# Validate after every edit:  pvc config validate cluster.toml")
    w("# Reference of every key:      docs/cluster-toml.md (or `pvc config schema`)")
    if plan.lab:
        w("# This file describes the virtual hardware of `pvc-lab`: keep MACs, NICs and disks as they are.")
    else:
        w("# Replace every value marked CHANGE: MACs, disk models, BMC addresses and passwords.")
    w("schema = 1")
    w("")
    w("[cluster]")
    w(f'name = "{name}"')
    w(f'domain = "{name}.{"lab.invalid" if plan.lab else "example.com"}"')
    w('timezone = "UTC"')
    w("# 256-bit secret: every Ceph, ZooKeeper, PostgreSQL and API secret derives from it. Keep it private;")
    w('# or put it in a file next to this one and write join_key_file = "join.key" instead.')
    w(f'join_key = "{join_key}"')
    w("")
    w("[[users]]")
    w('name = "admin"')
    w("# CHANGE: your SSH public key(s); these users may log in to every node.")
    w('ssh_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5vdEFSZWFsS2V5UmVwbGFjZU1lUGxlYXNlMTIz admin@example"]')
    w("")
    _network(plan, w)
    w("[bgp]")
    w("asn = 65500  # private ASN of the cluster; upstream routers peer with the coordinators")
    w('routers = []  # e.g. [{ address = "10.100.0.254" }]')
    w("")
    for node_id in range(1, plan.nodes + 1):
        _node(plan, node_id, w)
    w("[ceph]")
    w(f'osd_memory_target = "{"1G" if plan.lab else "4G"}"')
    w(
        f"pool_defaults = {{ size = {plan.pool_size}, min_size = {max(1, plan.pool_size - 1)}, pgs = "
        f"{16 if plan.lab else 64} }}"
    )
    w("")
    w("[[ceph.pools]]")
    w('name = "vms"')
    w("")
    w("[timers]")
    # a lab shares one machine's cores among its nodes and their TCG guests: looser than the defaults
    keepalive, dead_after = (2, 5) if plan.lab else (Timers().keepalive_interval, Timers().dead_after)
    w(f"keepalive_interval = {keepalive}  # seconds")
    w(f"dead_after = {dead_after}          # missed keepalives before a node is declared dead and fenced")
    w("vm_shutdown_timeout = 180")
    w("")
    w("[fencing]")
    w(f"enabled = {'true' if plan.nodes > 1 else 'false'}")
    w('on_success = "migrate"  # restart a fenced node\'s VMs elsewhere once its power-off is confirmed')
    w('on_failure = "none"     # never restart VMs whose node could not be confirmed off')
    w("")
    w("[migration]")
    w('selector = "mem"')
    w("max_downtime_ms = 300")
    return "\n".join(out) + "\n"


def _network(plan: Plan, w: Callable[[str], None]) -> None:
    if plan.lab:
        for net in ("upstream", "cluster", "storage"):
            w("[[network.nics]]")
            w(f'name = "{hw.NICS[net]}"')
            w("mtu = 1500")
            w("")
        for net in ("upstream", "cluster", "storage"):
            prefix = hw.NETS[net]
            w(f"[network.{net}]")
            w(f'device = "{hw.NICS[net]}"')
            w(f'subnet = "{prefix}.0/24"')
            w(f'floating_ip = "{prefix}.250"')
            if net == "upstream":
                w(f'gateway = "{prefix}.254"  # the lab host side of the upstream bridge')
            w("")
        return
    w("# Physical network: two 10G ports in an LACP bond carrying one VLAN per network.")
    w("[[network.nics]]")
    w('name = "ens1f0"')
    w("mtu = 9000")
    w("")
    w("[[network.nics]]")
    w('name = "ens1f1"')
    w("mtu = 9000")
    w("")
    w("[[network.bonds]]")
    w('name = "bond0"')
    w('members = ["ens1f0", "ens1f1"]')
    w('mode = "802.3ad"')
    w('lacp_rate = "fast"')
    w("mtu = 9000")
    w("")
    for vid, mtu in ((1000, 1500), (1001, 9000), (1002, 9000)):
        w("[[network.vlans]]")
        w(f'name = "vlan{vid}"')
        w('parent = "bond0"')
        w(f"id = {vid}")
        w(f"mtu = {mtu}")
        w("")
    for net, vid, subnet, mtu in (
        ("upstream", 1000, "10.100.0", 1500),
        ("cluster", 1001, "10.0.0", 9000),
        ("storage", 1002, "10.0.1", 9000),
    ):
        w(f"[network.{net}]")
        w(f'device = "vlan{vid}"')
        w(f'subnet = "{subnet}.0/24"')
        w(f'floating_ip = "{subnet}.250"')
        if net == "upstream":
            w(f'gateway = "{subnet}.254"')
        w(f"mtu = {mtu}")
        w("")


def _node(plan: Plan, node_id: int, w: Callable[[str], None]) -> None:
    coordinator = node_id <= plan.coordinators
    w("[[nodes]]")
    w(f'name = "node{node_id}"' if plan.lab else f'name = "hv{node_id}"')
    w(f"id = {node_id}")
    w(f"coordinator = {'true' if coordinator else 'false'}")
    if plan.lab:
        w(f'macs = ["{hw.mac(0, node_id)}"]')
        ips = ", ".join(f'{net} = "{hw.NETS[net]}.{10 + node_id}"' for net in ("upstream", "cluster", "storage"))
        w(f"ip = {{ {ips} }}")
        if plan.nodes > 1:
            w(
                f'ipmi = {{ address = "{hw.NETS["upstream"]}.{100 + node_id}", username = "{hw.BMC_USER}", '
                f'password = "{hw.BMC_PASSWORD}" }}'
            )
        w(f'data_disk = {{ path = "{hw.DATA_DISK}" }}')
        w(f'osds = [{{ path = "{hw.OSD_DISK}" }}]')
    else:
        w(f'macs = ["02:00:00:00:00:{node_id:02x}"]  # CHANGE: a MAC address of this server')
        w(f'ip = {{ upstream = "10.100.0.{node_id}", cluster = "10.0.0.{node_id}", storage = "10.0.1.{node_id}" }}')
        w(
            f'ipmi = {{ address = "10.100.0.{100 + node_id}", username = "pvcfence", password = "CHANGE-ME" }}'
            '  # or password_file = "ipmi.pass" next to this file'
        )
        w('data_disk = { model = "CHANGE-ME-BOOT-SSD*", size_min = "100G" }  # holds PVCDATA')
        w('osds = [{ model = "CHANGE-ME-DATA-SSD*", size_min = "400G" }]      # every matching disk becomes an OSD')
    w("")
