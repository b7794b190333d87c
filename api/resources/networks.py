"""/networks: client networks (docs/networks.md): list, create, change, remove; their DHCP leases and static
reservations, and their ACL rules.

A network declared in cluster.toml belongs to the config: the API shows it but refuses to change it (409: edit
cluster.toml). A network with VMs on it cannot be removed (409 naming them). An ACL rule is checked field by field,
then the network's whole ruleset with `nft -c`, before it is stored (400 naming the field).
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import falcon

from pvc.api.models import LeaseQuery, LeaseView, NetworkChange, NetworkCreate, NetworkView, Removed
from pvc.api.resources import Resource
from pvc.api.spec import RequestInvalid, operation
from pvc.config import networks
from pvc.config.schema import API_PREFIX, AclFields, ClusterFile, Reservation
from pvc.nodeos.clientnet import netfilter
from pvc.nodeos.state import networks as state_networks
from pvc.nodeos.state.models import NetworkRecord
from pvc.nodeos.state.store import ClusterState, Conflict, NotFound

TAGS = ["networks"]
MANAGED_ONLY = ("subnet", "gateway", "subnet6", "gateway6", "dhcp")  # NetworkRecord fields of managed networks only


def _path(where: tuple) -> str:
    return ".".join(str(p) for p in where)


def check(cfg: ClusterFile, record: NetworkRecord, others: list[NetworkRecord]) -> None:
    """Refuse (400, naming the field) a network record that cluster.toml's rules would refuse."""
    for where, message in networks.id_problems(record.type, record.vni):
        raise RequestInvalid(message, _path(where))
    if record.type == "bridged":
        if cfg.network.bridged is None:
            raise RequestInvalid("a bridged network needs [network.bridged] in cluster.toml", "type")
        given = [k for k in MANAGED_ONLY if getattr(record, k) is not None]
        given += ["dns"] if record.domain is not None or record.dns_servers else []  # the body's dns, as stored
        given += ["nat"] if record.nat else []
        if given:
            raise RequestInvalid(f"a bridged network takes no {', '.join(given)} (PVC only bridges it)", given[0])
        return
    if record.subnet is None or record.gateway is None:
        raise RequestInvalid(
            "a managed network needs 'subnet' and 'gateway'", "subnet" if not record.subnet else "gateway"
        )
    subnet = ipaddress.IPv4Network(record.subnet)
    dhcp = (record.dhcp.start, record.dhcp.end) if record.dhcp else None
    subnet6 = ipaddress.IPv6Network(record.subnet6) if record.subnet6 else None
    gateway6 = ipaddress.IPv6Address(record.gateway6) if record.gateway6 else None
    for where, message in networks.address_problems(
        record.name, subnet, ipaddress.IPv4Address(record.gateway), dhcp, record.reservations, subnet6, gateway6
    ):
        raise RequestInvalid(message, _path(where))
    taken = [(f"the {name} network", core.subnet) for name, core in cfg.core_networks()]
    taken += [
        (f"network {o.name}", ipaddress.IPv4Network(o.subnet)) for o in others if o.subnet and o.vni != record.vni
    ]
    for what, other in taken:
        if subnet.overlaps(other):
            raise RequestInvalid(f"subnet {subnet} overlaps {what} ({other})", "subnet")


def check_rules(record: NetworkRecord) -> None:
    """Refuse a ruleset nftables would refuse (after the field checks of each rule)."""
    for i, rule in enumerate(record.acls):
        for where, message in networks.rule_problems(rule):
            raise RequestInvalid(
                f"ACL '{rule.description}': {message}", _path(where) if i == len(record.acls) - 1 else "acls"
            )
    workdir = Path(tempfile.gettempdir()) / f"pvc-api-nft-{os.getpid()}"
    try:
        netfilter.check_network(record, workdir)
    except netfilter.RenderError as exc:
        raise RequestInvalid(str(exc), exc.field) from None


def owned_by_api(record: NetworkRecord) -> NetworkRecord:
    if record.owner == "config":
        raise Conflict(
            f"network {record.name} (VNI {record.vni}) is declared in cluster.toml; change it in its "
            "[[client_networks]] entry there"
        )
    return record


def remove_item(state: ClusterState, vni: int, key: str, match: Callable[[Any], bool], what: str) -> None:
    """Remove the item `match` picks from a network's list `key` (reservations, acls); 404 if there is none."""

    def remove(record: NetworkRecord) -> NetworkRecord:
        owned_by_api(record)
        items = getattr(record, key)
        kept = [item for item in items if not match(item)]
        if len(kept) == len(items):
            raise NotFound(f"no {what} on network {record.name}")
        return record.model_copy(update={key: kept})

    state.update_network(vni, remove)


def view(state: ClusterState, record: NetworkRecord) -> NetworkView:
    return NetworkView(**record.model_dump(), vms=state_networks.users(record.vni, state.vms()))


class NetworksResource(Resource):
    @operation(
        summary="Client networks, with their owner and the VMs on them",
        response=list[NetworkView],
        errors=(),
        tags=TAGS,
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[NetworkView]:
        state = self.ctx.ready_state()
        vms = state.vms()
        return [NetworkView(**n.model_dump(), vms=state_networks.users(n.vni, vms)) for n in state.networks()]

    @operation(
        summary="Create a client network",
        body=NetworkCreate,
        response=NetworkView,
        status=201,
        errors=(409,),
        tags=TAGS,
        description="The MTU is clamped to what the underlay allows (cluster MTU - 50 for managed, the bridged "
        "device's MTU for bridged). Managed networks need subnet and gateway.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, body: NetworkCreate) -> NetworkView:
        state = self.ctx.ready_state()
        cfg = self.ctx.cfg
        dns = body.dns
        managed = body.type == "managed"
        record = NetworkRecord(
            vni=body.vni,
            name=body.name,
            type=body.type,
            owner="api",
            description=body.description,
            mtu=networks.clamp_mtu(body.mtu, networks.max_mtu(cfg, body.type)),
            subnet=str(body.subnet) if body.subnet else None,
            gateway=str(body.gateway) if body.gateway else None,
            subnet6=str(body.subnet6) if body.subnet6 else None,
            gateway6=str(body.gateway6) if body.gateway6 else None,
            dhcp=body.dhcp,
            domain=(dns.domain if dns and dns.domain else state_networks.default_domain(cfg, body.name))
            if managed
            else None,
            dns_servers=[str(s) for s in (dns.servers if dns and dns.servers else cfg.cluster.dns_servers)]
            if managed
            else [],
            nat=body.nat,
            acl_policy=body.acl_policy,
        )
        if not managed and dns is not None:
            raise RequestInvalid("a bridged network takes no dns (PVC only bridges it)", "dns")
        check(cfg, record, state.networks())
        state.create_network(record)
        resp.location = f"{API_PREFIX}/networks/{record.vni}"
        return view(state, record)


class NetworkResource(Resource):
    @operation(summary="One network", response=NetworkView, tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response, vni: int) -> NetworkView:
        state = self.ctx.ready_state()
        return view(state, state.network(vni))

    @operation(
        summary="Change a network (not its VNI, name or type)",
        body=NetworkChange,
        response=NetworkView,
        errors=(404, 409),
        tags=TAGS,
        description="409 for a network declared in cluster.toml. A field given as null is cleared.",
    )
    def on_patch(self, req: falcon.Request, resp: falcon.Response, vni: int, body: NetworkChange) -> NetworkView:
        state = self.ctx.ready_state()
        cfg = self.ctx.cfg
        given = body.model_fields_set
        others = state.networks()

        def change(record: NetworkRecord) -> NetworkRecord:
            owned_by_api(record)
            update: dict = {}
            for key in ("description", "nat", "acl_policy"):
                if key in given and getattr(body, key) is not None:
                    update[key] = getattr(body, key)
            for key in ("subnet", "gateway", "subnet6", "gateway6"):
                if key in given:
                    value = getattr(body, key)
                    update[key] = str(value) if value is not None else None
            if "dhcp" in given:
                update["dhcp"] = body.dhcp
            if "mtu" in given:
                update["mtu"] = networks.clamp_mtu(body.mtu, networks.max_mtu(cfg, record.type))
            if "dns" in given and body.dns is not None:
                if body.dns.domain:
                    update["domain"] = body.dns.domain
                update["dns_servers"] = [str(s) for s in body.dns.servers]
            new = record.model_copy(update=update)
            check(cfg, new, others)
            return new

        return view(state, state.update_network(vni, change))

    @operation(
        summary="Remove a network",
        response=Removed,
        errors=(404, 409),
        tags=TAGS,
        description="409 for a network declared in cluster.toml, or one that VMs use (named).",
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, vni: int) -> Removed:
        state = self.ctx.ready_state()
        record = owned_by_api(state.network(vni))
        holders = state_networks.users(record.vni, state.vms())
        if holders:
            raise Conflict(f"network {record.name} (VNI {vni}) is in use by VMs: {', '.join(holders)}")
        state.remove_network(record.vni)
        return Removed(removed=str(record.vni))


class NetworkLeasesResource(Resource):
    @operation(
        summary="DHCP leases and reservations of a managed network",
        query=LeaseQuery,
        response=list[LeaseView],
        tags=TAGS,
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response, vni: int, query: LeaseQuery) -> list[LeaseView]:
        state = self.ctx.ready_state()
        record = state.network(vni)
        out = [
            LeaseView(mac=r.mac, ip=str(r.ip), hostname=r.hostname, expires=0, static=True) for r in record.reservations
        ]
        if not query.static:
            reserved = {r.mac for r in record.reservations}
            out += [
                LeaseView(mac=ls.mac, ip=ls.ip, hostname=ls.hostname, expires=ls.expires, static=False)
                for ls in state.leases(record.vni)
                if ls.mac not in reserved
            ]
        return out


class NetworkReservationsResource(Resource):
    @operation(summary="Static DHCP reservations of a managed network", response=list[Reservation], tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response, vni: int) -> list[Reservation]:
        return list(self.ctx.ready_state().network(vni).reservations)

    @operation(
        summary="Reserve an address for a MAC",
        body=Reservation,
        response=Reservation,
        status=201,
        errors=(404, 409),
        tags=TAGS,
        description="409 if the MAC already has one, or for a network declared in cluster.toml.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, vni: int, body: Reservation) -> Reservation:
        state = self.ctx.ready_state()
        cfg = self.ctx.cfg
        others = state.networks()

        def add(record: NetworkRecord) -> NetworkRecord:
            owned_by_api(record)
            if record.type != "managed":
                raise RequestInvalid("reservations are for managed networks (PVC serves their DHCP)", "mac")
            if any(r.mac == body.mac for r in record.reservations):
                raise Conflict(f"{body.mac} already has a reservation on network {record.name}")
            new = record.model_copy(update={"reservations": [*record.reservations, body]})
            check(cfg, new, others)
            return new

        state.update_network(vni, add)
        resp.location = f"{API_PREFIX}/networks/{vni}/reservations/{body.mac}"
        return body


class NetworkReservationResource(Resource):
    @operation(summary="Remove a reservation", response=Removed, errors=(404, 409), tags=TAGS)
    def on_delete(self, req: falcon.Request, resp: falcon.Response, vni: int, mac: str) -> Removed:
        remove_item(self.ctx.ready_state(), vni, "reservations", lambda r: r.mac == mac, f"reservation for {mac}")
        return Removed(removed=mac)


class NetworkAclsResource(Resource):
    @operation(summary="ACL rules of a managed network, in the order they run", response=list[AclFields], tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response, vni: int) -> list[AclFields]:
        return netfilter.ordered(self.ctx.ready_state().network(vni).acls)

    @operation(
        summary="Add an ACL rule",
        body=AclFields,
        response=AclFields,
        status=201,
        errors=(404, 409),
        tags=TAGS,
        description="Without an order the rule runs after the others. The rule must render (checked with nft -c): "
        "400 names the field. 409 if the description is taken, or for a network declared in cluster.toml.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, vni: int, body: AclFields) -> AclFields:
        stored: list[AclFields] = []

        def add(record: NetworkRecord) -> NetworkRecord:
            owned_by_api(record)
            if record.type != "managed":
                raise RequestInvalid("ACLs are for managed networks (PVC does not route bridged ones)", "direction")
            if any(r.description == body.description for r in record.acls):
                raise Conflict(f"network {record.name} already has an ACL '{body.description}'")
            rule = body
            if rule.order is None:
                last = max((r.order for r in record.acls if r.order is not None), default=0)
                rule = body.model_copy(update={"order": last + 10})
            new = record.model_copy(update={"acls": [*record.acls, rule]})
            check_rules(new)
            stored[:] = [rule]
            return new

        self.ctx.ready_state().update_network(vni, add)
        resp.location = f"{API_PREFIX}/networks/{vni}/acls/{body.description}"
        return stored[0]


class NetworkAclResource(Resource):
    @operation(summary="Remove an ACL rule", response=Removed, errors=(404, 409), tags=TAGS)
    def on_delete(self, req: falcon.Request, resp: falcon.Response, vni: int, description: str) -> Removed:
        remove_item(self.ctx.ready_state(), vni, "acls", lambda r: r.description == description, f"ACL '{description}'")
        return Removed(removed=description)
