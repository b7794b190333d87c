"""Client networks as cluster objects: records made from cluster.toml (owned by the config), the config reconcile
the primary runs at start, and which VMs use a network.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial

from pvc.config import networks
from pvc.config.schema import AclFields, ClientNetwork, ClusterFile
from pvc.nodeos.state.models import NetworkRecord, VmSpec
from pvc.nodeos.state.store import ClusterState, Conflict, NotFound
from pvc.nodeos.state.vmimport import bridged_networks

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


def vm_networks(spec: VmSpec) -> set[int]:
    """The VNIs of the networks a VM has a NIC on: its definition's NICs.

    A VM without a definition counts with what it was defined with, so that no network is removed under a VM that
    may be using it: a VM refused when PVC typed its VMs (schema 3) keeps running with its original domain XML, so
    the PVC bridges of that XML count; a stored definition this PVC cannot read (written by hand or by a newer PVC)
    counts with the networks its NICs name."""
    if spec.definition is not None:
        return set(spec.definition.networks)
    found = bridged_networks(spec.original_xml) if spec.original_xml else set()
    nics = (spec.unreadable_definition or {}).get("nics")
    for nic in nics if isinstance(nics, list) else []:
        network = nic.get("network") if isinstance(nic, dict) else None
        if isinstance(network, int) and not isinstance(network, bool):
            found.add(network)
    return found


def users(vni: int, vms: Iterable[VmSpec]) -> list[str]:
    """Names of the VMs with a NIC on the network (`vm_networks`)."""
    return sorted(spec.name for spec in vms if vni in vm_networks(spec))
