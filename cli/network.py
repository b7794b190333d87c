"""`pvc network ...`: client networks (list, info, add, modify, remove), their DHCP leases and reservations
(`pvc network dhcp`) and their ACL rules (`pvc network acl`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from pvc.cli.client import from_context, path
from pvc.cli.output import duration, emit, fields, format_option, table
from pvc.config.choices import ACL_ACTIONS, ACL_DIRECTIONS, ACL_POLICIES, ACL_PROTOCOLS, NETWORK_TYPES


def net_path(vni: int, *rest: str) -> str:
    return path("networks", str(vni), *rest)


@click.group()
def network() -> None:
    """Client networks: bridged VLANs and managed VXLANs with DHCP, DNS, NAT and ACLs."""


def _addresses(n: dict) -> str:
    parts = [f"{n['subnet']} gw {n['gateway']}"] if n.get("subnet") else []
    if n.get("subnet6"):
        parts.append(f"{n['subnet6']} gw {n['gateway6']}")
    return ", ".join(parts) or "-"


def network_rows(data: list[dict]) -> str:
    rows = [
        (
            n["vni"],
            n["name"],
            n["type"],
            n["owner"],
            n["mtu"],
            _addresses(n),
            f"{n['dhcp']['start']}-{n['dhcp']['end']}" if n.get("dhcp") else "-",
            "yes" if n.get("nat") else "no",
            len(n.get("vms", [])),
        )
        for n in data
    ]
    return table(["vni", "name", "type", "owner", "mtu", "addresses", "dhcp", "nat", "vms"], rows)


def network_detail(n: dict) -> str:
    return fields(
        [
            ("VNI", n["vni"]),
            ("name", n["name"]),
            ("type", n["type"]),
            ("owner", n["owner"] + (" (change it in cluster.toml)" if n["owner"] == "config" else "")),
            ("description", n.get("description") or "-"),
            ("MTU", n["mtu"]),
            ("IPv4", f"{n['subnet']} gateway {n['gateway']}" if n.get("subnet") else "-"),
            ("IPv6", f"{n['subnet6']} gateway {n['gateway6']}" if n.get("subnet6") else "-"),
            ("DHCP", f"{n['dhcp']['start']} - {n['dhcp']['end']}" if n.get("dhcp") else "off"),
            ("domain", n.get("domain") or "-"),
            ("name servers", ", ".join(n.get("dns_servers") or []) or "-"),
            ("NAT", "on" if n.get("nat") else "off"),
            ("reservations", len(n.get("reservations") or [])),
            ("ACL rules", f"{len(n.get('acls') or [])} (policy {n.get('acl_policy', 'accept')})"),
            ("VMs", ", ".join(n.get("vms") or []) or "-"),
        ]
    )


@network.command("list")
@format_option
def network_list(fmt: str) -> None:
    """Every client network, with its owner (config or api) and how many VMs use it."""
    emit(from_context().get("/networks"), fmt, network_rows)


@network.command("info")
@click.argument("vni", type=int)
@format_option
def network_info(vni: int, fmt: str) -> None:
    """One network in full."""
    emit(from_context().get(net_path(vni)), fmt, network_detail)


def _body(
    mtu: int | None,
    subnet: str | None,
    gateway: str | None,
    subnet6: str | None,
    gateway6: str | None,
    dhcp_start: str | None,
    dhcp_end: str | None,
    domain: str | None,
    dns_servers: tuple[str, ...],
    nat: bool | None,
    policy: str | None,
    description: str | None,
) -> dict:
    """The request fields given on the command line ("" clears subnet6, gateway6, mtu and the DHCP range)."""
    body: dict = {}
    for key, value in (("subnet", subnet), ("gateway", gateway), ("subnet6", subnet6), ("gateway6", gateway6)):
        if value is not None:
            body[key] = value or None
    if mtu is not None:
        body["mtu"] = mtu or None
    if dhcp_start is not None or dhcp_end is not None:
        if dhcp_start == "" or dhcp_end == "":
            body["dhcp"] = None
        elif dhcp_start is None or dhcp_end is None:
            raise click.UsageError("give both --dhcp-start and --dhcp-end")
        else:
            body["dhcp"] = {"start": dhcp_start, "end": dhcp_end}
    if domain is not None or dns_servers:
        body["dns"] = {k: v for k, v in (("domain", domain), ("servers", list(dns_servers))) if v}
    if nat is not None:
        body["nat"] = nat
    if policy is not None:
        body["acl_policy"] = policy
    if description is not None:
        body["description"] = description
    return body


def _network_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--description", help="Free text."),
        click.option("--mtu", type=int, help="MTU (clamped to what the underlay allows; 0: the most allowed)."),
        click.option("--subnet", help="IPv4 subnet, e.g. 10.100.0.0/24 (managed)."),
        click.option("--gateway", help="IPv4 gateway address, held by the primary (managed)."),
        click.option("--subnet6", help='IPv6 /64 (managed; "" removes IPv6).'),
        click.option("--gateway6", help="IPv6 gateway address (managed)."),
        click.option("--dhcp-start", help='First address DHCP hands out (managed; "" turns DHCP off).'),
        click.option("--dhcp-end", help="Last address DHCP hands out (managed)."),
        click.option("--domain", help="DNS domain of the network (default <name>.<cluster domain>)."),
        click.option("--dns-server", "dns_servers", multiple=True, help="Upstream name server (repeatable)."),
        click.option("--nat/--no-nat", default=None, help="Masquerade the subnet to the upstream network."),
        click.option("--acl-policy", "policy", type=click.Choice(ACL_POLICIES), help="What no ACL rule decides."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@network.command("add")
@click.argument("vni", type=int)
@click.option("--name", required=True, help="Unique name: a-z, 0-9, '-'.")
@click.option("--type", "net_type", type=click.Choice(NETWORK_TYPES), required=True, help="bridged or managed.")
@_network_options
@format_option
def network_add(vni: int, name: str, net_type: str, fmt: str, **opts: object) -> None:
    """Create a network. VNI: a managed network's VXLAN id, a bridged network's VLAN id."""
    body = {"vni": vni, "name": name, "type": net_type, **_body(**opts)}  # type: ignore[arg-type]
    body = {k: v for k, v in body.items() if v is not None}
    data = from_context().post("/networks", body)
    emit(data, fmt, lambda n: f"created network {n['name']} (VNI {n['vni']}, {n['type']}, MTU {n['mtu']})")


@network.command("modify")
@click.argument("vni", type=int)
@_network_options
@format_option
def network_modify(vni: int, fmt: str, **opts: object) -> None:
    """Change a network the API owns (a network from cluster.toml changes there)."""
    body = _body(**opts)  # type: ignore[arg-type]
    if not body:
        raise click.UsageError("nothing to change: give at least one option")
    data = from_context().patch(net_path(vni), body)
    emit(data, fmt, lambda n: f"network {n['name']} (VNI {n['vni']}) changed")


@network.command("remove")
@click.argument("vni", type=int)
def network_remove(vni: int) -> None:
    """Remove a network no VM uses."""
    from_context().delete(net_path(vni))
    click.echo(f"removed network {vni}")


# -- dhcp ------------------------------------------------------------------------------------------------------
@network.group("dhcp")
def dhcp() -> None:
    """DHCP leases and static reservations of a managed network."""


def lease_rows(data: list[dict]) -> str:
    rows = [
        (
            ls["mac"],
            ls["ip"],
            ls["hostname"] or "-",
            "static" if ls["static"] else "dynamic",
            "-" if not ls["expires"] else f"in {duration(max(0.0, ls['expires'] - time.time()))}",
        )
        for ls in data
    ]
    return table(["mac", "ip", "hostname", "kind", "expires"], rows)


@dhcp.command("list")
@click.argument("vni", type=int)
@click.option("--static", is_flag=True, help="Only the reservations.")
@format_option
def dhcp_list(vni: int, static: bool, fmt: str) -> None:
    """Leases handed out and reservations."""
    emit(from_context().get(net_path(vni, "leases"), static=static), fmt, lease_rows)


@dhcp.command("add")
@click.argument("vni", type=int)
@click.argument("ip")
@click.argument("mac")
@click.option("--hostname", default="", help="The name DNS gives the address.")
@format_option
def dhcp_add(vni: int, ip: str, mac: str, hostname: str, fmt: str) -> None:
    """Reserve IP for the NIC with MAC."""
    data = from_context().post(net_path(vni, "reservations"), {"mac": mac, "ip": ip, "hostname": hostname})
    emit(data, fmt, lambda r: f"reserved {r['ip']} for {r['mac']} on network {vni}")


@dhcp.command("remove")
@click.argument("vni", type=int)
@click.argument("mac")
def dhcp_remove(vni: int, mac: str) -> None:
    """Remove MAC's reservation."""
    from_context().delete(net_path(vni, "reservations", mac))
    click.echo(f"removed the reservation of {mac} on network {vni}")


# -- acl -------------------------------------------------------------------------------------------------------
@network.group("acl")
def acl() -> None:
    """Firewall rules of a managed network (docs/networks.md)."""


def acl_rows(data: list[dict]) -> str:
    rows = [
        (
            r["order"] if r.get("order") is not None else "-",
            r["description"],
            r["direction"],
            r["action"],
            r["protocol"],
            r.get("source") or "any",
            r.get("destination") or "any",
            r.get("ports") or "-",
        )
        for r in data
    ]
    return table(["order", "description", "dir", "action", "proto", "source", "destination", "ports"], rows)


@acl.command("list")
@click.argument("vni", type=int)
@click.option("--direction", type=click.Choice(ACL_DIRECTIONS), help="Only rules of this direction.")
@format_option
def acl_list(vni: int, direction: str | None, fmt: str) -> None:
    """The rules in the order they run."""
    data = from_context().get(net_path(vni, "acls"))
    emit([r for r in data if direction in (None, r["direction"])], fmt, acl_rows)


@acl.command("add")
@click.argument("vni", type=int)
@click.argument("description")
@click.option("--action", type=click.Choice(ACL_ACTIONS), required=True)
@click.option(
    "--direction",
    type=click.Choice(ACL_DIRECTIONS),
    default="in",
    show_default=True,
    help="in: to the network's VMs; out: from them.",
)
@click.option("--protocol", type=click.Choice(ACL_PROTOCOLS), default="any", show_default=True)
@click.option("--source", help="Address or subnet (IPv4 or IPv6).")
@click.option("--destination", help="Address or subnet (IPv4 or IPv6).")
@click.option("--ports", help='Destination ports (tcp/udp): "22", "80,443", "8000-8100".')
@click.option("--order", type=int, help="Lower runs first (default: after the others).")
@format_option
def acl_add(vni: int, description: str, fmt: str, **rule: object) -> None:
    """Add a rule named DESCRIPTION."""
    body = {"description": description, **{k: v for k, v in rule.items() if v is not None}}
    data = from_context().post(net_path(vni, "acls"), body)
    emit(data, fmt, lambda r: f"added ACL {r['description']} (order {r['order']}) to network {vni}")


@acl.command("remove")
@click.argument("vni", type=int)
@click.argument("description")
def acl_remove(vni: int, description: str) -> None:
    """Remove the rule named DESCRIPTION."""
    from_context().delete(net_path(vni, "acls", description))
    click.echo(f"removed ACL {description} from network {vni}")
