"""Choosing a node for a VM (pure). Selectors follow the original PVC; unlike it, a node without room for the VM's
memory is never chosen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pvc.nodeos.state.models import Keepalive, NodeRecord, VmSpec

if TYPE_CHECKING:  # placement stays pure: only its caller's type comes from the store
    from pvc.nodeos.state.store import ClusterState


@dataclass(frozen=True)
class Candidate:
    record: NodeRecord
    keepalive: Keepalive


class NoTarget(Exception):
    """No node can take the VM; the message says why for each node."""


def eligible(vm: VmSpec, candidates: list[Candidate], exclude: set[str]) -> tuple[list[Candidate], list[str]]:
    """The candidates that may take `vm`, and a reason for each one that may not."""
    ok, why = [], []
    for c in candidates:
        name = c.record.name
        if name in exclude:
            continue
        if vm.placement.node_limit and name not in vm.placement.node_limit:
            why.append(f"{name}: not in the VM's node limit")
        elif c.record.daemon_state != "run":
            why.append(f"{name}: daemon is {c.record.daemon_state}")
        elif c.record.domain_state != "ready":
            why.append(f"{name}: {c.record.domain_state}")
        elif c.keepalive.mem_free < vm.memory_mib:
            why.append(f"{name}: {c.keepalive.mem_free} MiB free, the VM needs {vm.memory_mib} MiB")
        else:
            ok.append(c)
    return ok, why


def score(selector: str, c: Candidate) -> float:
    """Lower is better."""
    k = c.keepalive
    if selector == "mem":
        return -k.mem_free
    if selector == "memprov":
        return -(k.mem_total - k.mem_provisioned)
    if selector == "vcpus":
        return k.vcpus_allocated
    if selector == "load":
        return k.load
    if selector == "vms":
        return len(k.running)
    raise ValueError(f"unknown selector '{selector}'")


def choose(vm: VmSpec, candidates: list[Candidate], default_selector: str, exclude: set[str]) -> str:
    ok, why = eligible(vm, candidates, exclude)
    if not ok:
        raise NoTarget("no node can take it (" + ("; ".join(why) or "no other node") + ")")
    selector = vm.placement.selector or default_selector
    return min(ok, key=lambda c: (score(selector, c), c.record.name)).record.name


def check_target(vm: VmSpec, candidates: list[Candidate], target: str) -> None:
    """Raise NoTarget if the explicitly requested `target` cannot take `vm`."""
    named = [c for c in candidates if c.record.name == target]
    if not named:
        raise NoTarget(f"there is no node '{target}'")
    ok, why = eligible(vm, named, exclude=set())
    if not ok:
        raise NoTarget(f"node {why[0]}")


def candidates(state: ClusterState) -> list[Candidate]:
    """Every node with its latest keepalive (a node that never sent one counts as having nothing free)."""
    out = []
    for record in state.nodes():
        ka = state.keepalive(record.name)
        out.append(Candidate(record, ka[0] if ka else Keepalive()))
    return out
