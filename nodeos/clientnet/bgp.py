"""The managed subnets BGP announces to the upstream routers: the prefix-list frr.ANNOUNCE, kept current in the
running bgpd through vtysh (no restart, no reload of frr.conf). Every node keeps the same list; only the primary has
the subnets as connected routes (it holds their gateways), so only it announces them, and a new primary takes over
the announcement when it adds the gateways.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence

from pvc.nodeos.formation.frr import ANNOUNCE
from pvc.nodeos.state.models import NetworkRecord

VTYSH = "vtysh"
_LINE = re.compile(rf"^ip prefix-list {re.escape(ANNOUNCE)} seq (\d+) permit (\S+)$")


def announced(nets: Sequence[NetworkRecord]) -> list[str]:
    """The subnets to announce: every managed network's, except those behind NAT (the routers never see them)."""
    return sorted({n.subnet for n in nets if n.type == "managed" and n.subnet and not n.nat})


def current(running_config: str) -> dict[str, int]:
    """prefix -> seq of the prefix-list's entries in `show running-config`."""
    out = {}
    for line in running_config.splitlines():
        match = _LINE.match(line.strip())
        if match:
            out[match.group(2)] = int(match.group(1))
    return out


def commands(have: dict[str, int], want: Sequence[str]) -> list[str]:
    """The vtysh configuration commands that turn `have` into `want` (pure)."""
    cmds = [
        f"no ip prefix-list {ANNOUNCE} seq {seq} permit {prefix}"
        for prefix, seq in sorted(have.items())
        if prefix not in want
    ]
    seq = max(have.values(), default=0)
    for prefix in want:
        if prefix not in have:
            seq += 5
            cmds.append(f"ip prefix-list {ANNOUNCE} seq {seq} permit {prefix}")
    return cmds


class Bgp:
    """bgpd through vtysh (`pathspace`: vtysh -N, for an FRR instance of a test namespace)."""

    def __init__(self, pathspace: str | None = None) -> None:
        self.base = [VTYSH] + (["-N", pathspace] if pathspace else [])

    def _vtysh(self, *commands: str) -> str:
        argv = [*self.base]
        for command in commands:
            argv += ["-c", command]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise OSError(f"vtysh {' / '.join(commands)}: {(done.stdout + done.stderr).strip()}")
        return done.stdout

    def sync(self, nets: Sequence[NetworkRecord]) -> list[str]:
        """Bring the prefix-list to the announced subnets; returns the commands it ran."""
        cmds = commands(current(self._vtysh("show running-config")), announced(nets))
        if cmds:
            self._vtysh("configure terminal", *cmds)
        return cmds
