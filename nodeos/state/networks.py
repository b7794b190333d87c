"""Client networks as cluster objects: records made from cluster.toml (owned by the config), the config reconcile
the primary runs at start, and which VMs use a network.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial

from pvc.config import networks
from pvc.config.schema import AclFields, ClientNetwork, ClusterFile
from pvc.nodeos.state import domxml
from pvc.nodeos.state.models import NetworkRecord, VmSpec
from pvc.nodeos.state.store import ClusterState, Conflict, NotFound

log = logging.getLogger(__name__)


def _keep_created(new: NetworkRecord, old: NetworkRecord) -> NetworkRecord:
    return new.model_copy(update={"created": old.created})


def default_domain(cfg: ClusterFile, name: str) -> str:
    """A managed network's DNS domain when none is given: <network name>.<cluster domain>."""
    return f"{name}.{cfg.cluster.domain}"


def from_config(cfg: ClusterFile, cn: ClientNetwork) -> NetworkRecord:
    """The record of a [[client_networks]] entry (owner "config"), its MTU clamped to what the underlay allows."""
    mtu = networks.clamp_mtu(cn.mtu, networks.max_mtu(cfg, cn.type))
    if cn.type == "bridged":
        return NetworkRecord(
            vni=cn.number, name=cn.name, type="bridged", owner="config", description=cn.description, mtu=mtu
        )
    dns = cn.dns
    return NetworkRecord(
        vni=cn.number,
        name=cn.name,
        type="managed",
        owner="config",
        description=cn.description,
        mtu=mtu,
        subnet=str(cn.subnet),
        gateway=str(cn.gateway),
        subnet6=str(cn.subnet6) if cn.subnet6 else None,
        gateway6=str(cn.gateway6) if cn.gateway6 else None,
        dhcp=cn.dhcp,
        domain=(dns.domain if dns and dns.domain else default_domain(cfg, cn.name)),
        dns_servers=[str(s) for s in (dns.servers if dns and dns.servers else cfg.cluster.dns_servers)],
        nat=cn.nat,
        reservations=list(cn.reservations),
        acl_policy=cn.acl_policy,
        acls=[AclFields.model_validate(rule.model_dump()) for rule in cn.acls],  # as stored
    )


def _same(a: NetworkRecord, b: NetworkRecord) -> bool:
    skip = {"created", "updated"}
    return a.model_dump(exclude=skip) == b.model_dump(exclude=skip)


def reconcile_config(state: ClusterState, cfg: ClusterFile) -> list[str]:
    """Make the config-owned networks in ZooKeeper match cluster.toml: create the new ones, update the changed ones,
    remove the ones no longer declared (unless VMs use them). Networks the API owns are left alone; a config network
    whose VNI the API already uses is not taken over. Returns what it did, one line each."""
    done: list[str] = []
    wanted = {cn.number: from_config(cfg, cn) for cn in cfg.client_networks}
    current = {n.vni: n for n in state.networks()}
    for vni, record in wanted.items():
        have = current.get(vni)
        if have is None:
            try:
                state.create_network(record)
                done.append(f"created network {record.name} (VNI {vni}) from cluster.toml")
            except Conflict as exc:
                log.error("cluster.toml network %s (VNI %d) not created: %s", record.name, vni, exc)
        elif have.owner != "config":
            log.error("cluster.toml network %s: VNI %d belongs to the API's network %s", record.name, vni, have.name)
        elif not _same(have, record):
            state.update_network(vni, partial(_keep_created, record))
            done.append(f"updated network {record.name} (VNI {vni}) from cluster.toml")
    vms = state.vms()
    for vni, have in current.items():
        if have.owner != "config" or vni in wanted:
            continue
        holders = users(vni, vms)
        if holders:
            log.error("network %s left cluster.toml but VMs use it (%s): kept", have.name, ", ".join(holders))
            continue
        try:
            state.remove_network(vni)
            done.append(f"removed network {have.name} (VNI {vni}): no longer in cluster.toml")
        except NotFound:
            pass
    return done


def users(vni: int, vms: Iterable[VmSpec]) -> list[str]:
    """Names of the VMs with a NIC on the network. Reads the bridges from each VM's domain XML (a stop-gap until the
    typed VM definition lands: then its NICs' `network`)."""
    bridge = networks.bridge_name(vni)
    return sorted(spec.name for spec in vms if bridge in domxml.bridges(spec.xml))
