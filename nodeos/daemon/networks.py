"""The network controller: converges this node to the cluster's client networks (docs/networks.md).

On every node: the networks' devices (vlan<N>/vxlan<N> + vmbr<N>), the ACL table, and the prefix-list of managed
subnets in bgpd. On the primary, in addition, per managed network: the gateway addresses on vmbr<N> (with a
gratuitous ARP), one dnsmasq, NAT; and at take-over, the reconcile of cluster.toml's networks. The election calls
`take_over()` after the floating IPs and `step_down()` before it drops them, so all of it moves with the primary.

It converges when a network changes (ZooKeeper watches), when the role changes, and every RESYNC_SECONDS (a
device someone deleted by hand comes back). When only the VMs change (the VM cache's generation), the primary
refreshes just its dnsmasqs' host entries (a VM is known in DNS by its VM name), within NAMES_SECONDS.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import sysconfig
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pvc.config import networks
from pvc.nodeos import netif
from pvc.nodeos.clientnet import dnsmasq, links, metadata, netfilter
from pvc.nodeos.clientnet.bgp import Bgp
from pvc.nodeos.clientnet.leases import LeaseServer
from pvc.nodeos.daemon.metadata import MetadataService
from pvc.nodeos.state.models import Lease, NetworkRecord
from pvc.nodeos.state.networks import reconcile_config

if TYPE_CHECKING:
    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)

RESYNC_SECONDS = 15.0
NAMES_SECONDS = 1.0
HOOK = "pvc-lease-hook"


def hook_path() -> str:
    """The lease hook installed beside pvcd (the same environment's scripts directory)."""
    return str(Path(sysconfig.get_path("scripts")) / HOOK)


class NetworkController:
    def __init__(self, daemon: Daemon, vlan_maker: links.VlanMaker = links.make_vlan) -> None:
        self.d = daemon
        cfg, node = daemon.cfg, daemon.node
        self.underlay = links.Underlay(
            cluster_ip=str(node.ip.cluster), bridged_device=cfg.network.bridged.device if cfg.network.bridged else None
        )
        self.vlan_maker = vlan_maker
        self.run_dir = Path(daemon.opts.run_dir) / "networks"
        # dnsmasq drops to nobody and must read its hosts folder, so its files cannot be under /run/pvc (0700: the
        # node's cluster.toml is there): a sibling folder, /run/pvc-dnsmasq, holds only what dnsmasq may read
        self.dnsmasq_dir = Path(f"{daemon.opts.run_dir}-dnsmasq")
        self.bgp = Bgp(daemon.opts.frr_pathspace)
        self.leases = LeaseServer(self.run_dir / "lease" / "lease.sock", self.lease_event)  # its folder is 0700
        self.metadata = MetadataService(daemon.state)
        self.primary = False
        self.dnsmasqs: dict[int, dnsmasq.Dnsmasq] = {}
        self.errors: dict[int, str] = {}
        self.lock = threading.RLock()
        self.dirty = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="networks", daemon=True)
        self.ready: list[NetworkRecord] = []  # the networks of the last convergence that have their devices
        self.names_generation = -1  # the VM cache's generation the dnsmasqs' VM names were taken from
        self._warned: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.dnsmasq_dir.mkdir(parents=True, exist_ok=True)
        self.dnsmasq_dir.chmod(0o755)
        self.leases.start()
        self.d.state.watch_networks(self.dirty.set)
        self.thread.start()

    def stop(self) -> None:
        with self.lock:
            self.primary = False
            for server in self.dnsmasqs.values():
                server.stop()
            self.dnsmasqs.clear()
            self.metadata.stop()
        self.leases.stop()

    def _loop(self) -> None:
        resync_at = time.monotonic() + RESYNC_SECONDS
        while not self.d.stopping.is_set():
            dirty = self.dirty.wait(NAMES_SECONDS)
            if self.d.stopping.is_set():
                return
            try:
                if dirty or time.monotonic() >= resync_at:
                    self.dirty.clear()
                    resync_at = time.monotonic() + RESYNC_SECONDS
                    self.converge()
                elif self.primary and self.d.vm_cache.generation != self.names_generation:
                    with self.lock:
                        self._dnsmasq(self.ready)
            except Exception:
                log.exception("network convergence failed")

    # -- the primary role ----------------------------------------------------------------------------------------
    def take_over(self) -> None:
        """This node became the primary: reconcile cluster.toml's networks, then gateways, NAT, dnsmasq."""
        with self.lock:
            self.primary = True
            try:
                for line in reconcile_config(self.d.state, self.d.cfg):
                    log.info("%s", line)
            except Exception:
                log.exception("reconciling cluster.toml's networks failed")
            self.converge()

    def step_down(self) -> None:
        """No longer the primary: stop dnsmasq, drop the gateways and NAT (before the floating IPs go)."""
        with self.lock:
            self.primary = False
            try:
                self.converge()
            except Exception:
                log.exception("network step-down failed")
                for server in self.dnsmasqs.values():
                    server.stop()
                self.dnsmasqs.clear()
                self.metadata.stop()

    # -- convergence -------------------------------------------------------------------------------------------
    def converge(self) -> None:
        with self.lock:
            nets = self.d.state.networks()
            with IPRoute() as ipr:
                changes, errors = links.converge(ipr, nets, self.underlay, self.vlan_maker)
                for line in changes:
                    log.info("networks: %s", line)
                for vni, error in errors.items():
                    if self.errors.get(vni) != error:
                        log.error("network %d: %s", vni, error)
                self.errors = errors
                ready = self.ready = [n for n in nets if n.vni not in errors]
                self._gateways(ipr, ready)
            self._netfilter(ready)
            self._dnsmasq(ready)
            self._metadata(ready)
            self._bgp(ready)

    def bridges_ready(self, vnis: set[int]) -> dict[int, str]:
        """What keeps the networks `vnis` from carrying a VM on this node (its bridge is missing), after one
        convergence when a bridge is missing: VNI -> why. Empty when every bridge is there."""

        def missing() -> set[int]:
            with IPRoute() as ipr:
                return {vni for vni in vnis if not ipr.link_lookup(ifname=networks.bridge_name(vni))}

        gone = missing()
        if gone:
            self.converge()
            gone = missing()
        return {vni: self.errors.get(vni, f"{networks.bridge_name(vni)} does not exist") for vni in sorted(gone)}

    def _gateways(self, ipr: IPRoute, nets: list[NetworkRecord]) -> None:
        if self.primary and any(n.type == "managed" for n in nets):
            _forwarding(any(n.subnet6 for n in nets))
        for net in nets:
            if net.type != "managed":
                continue
            bridge = networks.bridge_name(net.vni)
            gateway = self.primary and bool((net.subnet and net.gateway) or (net.subnet6 and net.gateway6))
            _set_mac(
                ipr,
                bridge,
                networks.gateway_mac(net.vni) if gateway else networks.bridge_mac(net.vni, self.underlay.cluster_ip),
            )
            wanted: set[tuple[str, int]] = set()
            if self.primary and net.subnet and net.gateway:
                wanted.add((net.gateway, ipaddress.ip_network(net.subnet).prefixlen))
                wanted.add((metadata.ADDRESS, 32))  # the metadata service, on every managed bridge
            if self.primary and net.subnet6 and net.gateway6:
                wanted.add((str(ipaddress.ip_address(net.gateway6)), ipaddress.ip_network(net.subnet6).prefixlen))
            have = _addresses(ipr, bridge)
            for address, prefix in sorted(have - wanted):
                netif.remove_address(bridge, address, prefix)
                log.info("networks: removed gateway %s/%d from %s", address, prefix, bridge)
            for address, prefix in sorted(wanted - have):
                if ipaddress.ip_address(address).version == 4:
                    netif.add_address(bridge, address, prefix)  # with a gratuitous ARP
                else:
                    _add_v6(ipr, bridge, address, prefix)
                log.info("networks: gateway %s/%d on %s", address, prefix, bridge)

    def _netfilter(self, nets: list[NetworkRecord]) -> None:
        upstream = self.d.cfg.network.upstream.device
        for name, text in (
            ("networks.nft", netfilter.render(nets)),
            ("nat.nft", netfilter.render_nat(nets, upstream, self.primary)),
        ):
            path = self.run_dir / name
            if path.exists() and path.read_text() == text:
                continue
            try:
                netfilter.apply(text, path)
                log.info("networks: loaded %s", name)
            except (netfilter.RenderError, OSError) as exc:
                path.unlink(missing_ok=True)
                log.error("networks: nftables refused %s: %s", name, exc)

    def _dnsmasq(self, nets: list[NetworkRecord]) -> None:
        wanted = {n.vni: n for n in nets if self.primary and n.type == "managed" and n.gateway}
        for vni in sorted(set(self.dnsmasqs) - set(wanted)):
            self.dnsmasqs.pop(vni).stop()
            log.info("networks: stopped dnsmasq of network %d", vni)
        self.names_generation = self.d.vm_cache.generation
        names = self._vm_names() if wanted else {}
        for vni, net in wanted.items():
            server = self.dnsmasqs.get(vni)
            if server is None:
                paths = dnsmasq.Paths(self.dnsmasq_dir / str(vni))
                server = self.dnsmasqs[vni] = dnsmasq.Dnsmasq(net, paths, hook_path(), str(self.leases.path))
            done = server.converge(net, names.get(vni, {}))
            if done:
                log.info("networks: dnsmasq of network %s (%d) %s", net.name, vni, done)

    def _vm_names(self) -> dict[int, dict[str, str]]:
        """VNI -> {MAC: VM name} of every VM NIC, from the VM cache."""
        names: dict[int, dict[str, str]] = {}
        for spec in list(self.d.vm_cache.specs.values()):
            for nic in spec.definition.nics if spec.definition else []:
                if nic.mac:
                    names.setdefault(nic.network, {})[nic.mac] = spec.name
        return names

    def _metadata(self, nets: list[NetworkRecord]) -> None:
        """On the primary, the metadata service on each managed network with an IPv4 gateway (its VMs' route)."""
        wanted = {
            networks.bridge_name(n.vni): n.vni
            for n in nets
            if self.primary and n.type == "managed" and n.subnet and n.gateway
        }
        for line in self.metadata.converge(wanted):
            log.info("networks: %s", line)

    def _bgp(self, nets: list[NetworkRecord]) -> None:
        try:
            for command in self.bgp.sync(nets):
                log.info("networks: bgpd: %s", command)
            self._warned.discard("bgp")
        except (OSError, FileNotFoundError) as exc:
            if "bgp" not in self._warned:
                log.warning("networks: cannot update the announced subnets in bgpd: %s", exc)
                self._warned.add("bgp")

    # -- the lease hook --------------------------------------------------------------------------------------------
    def lease_event(self, msg: dict) -> str:
        vni, action = int(msg["vni"]), msg["action"]
        if action == "init":
            leases = self.d.state.leases(vni)
            return dnsmasq.init_lines([(ls.expires, ls.mac, ls.ip, ls.hostname, ls.client_id) for ls in leases])
        if action in ("add", "old"):
            lease = Lease(
                mac=msg["mac"],
                ip=msg["ip"],
                hostname=msg.get("hostname") or "",
                expires=int(msg.get("expires") or 0),
                client_id=msg.get("client_id") or "",
            )
            self.d.state.put_lease(vni, lease)
            return "ok"
        if action == "del":
            self.d.state.remove_lease(vni, msg["mac"])
            return "ok"
        return f"error: unknown action {action!r}"


def _set_mac(ipr: IPRoute, device: str, mac: str) -> None:
    """The bridge's own MAC (before its gateway address goes on, so the gratuitous ARP carries it)."""
    found = ipr.link_lookup(ifname=device)
    if found and ipr.link("get", index=found[0])[0].get_attr("IFLA_ADDRESS") != mac:
        ipr.link("set", index=found[0], address=mac)
        log.info("networks: %s has the MAC %s", device, mac)


def _addresses(ipr: IPRoute, device: str) -> set[tuple[str, int]]:
    """The addresses on a device but IPv6 link-local ones (the kernel's own); 169.254.169.254 is PVC's."""
    found = ipr.link_lookup(ifname=device)
    if not found:
        return set()
    out = set()
    for addr in ipr.get_addr(index=found[0]):
        address = addr.get_attr("IFA_ADDRESS")
        ip = ipaddress.ip_address(address) if address else None
        if ip is not None and not (ip.version == 6 and ip.is_link_local):
            out.add((address, addr["prefixlen"]))
    return out


def _add_v6(ipr: IPRoute, device: str, address: str, prefix: int) -> None:
    index = ipr.link_lookup(ifname=device)[0]
    with contextlib.suppress(NetlinkError):  # there already
        ipr.addr("add", index=index, address=address, prefixlen=prefix, flags=0x02)  # IFA_F_NODAD: it moves


def _forwarding(v6: bool) -> None:
    """The primary routes between the managed networks and the upstream network."""
    with contextlib.suppress(OSError):
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        if v6:
            Path("/proc/sys/net/ipv6/conf/all/forwarding").write_text("1")
