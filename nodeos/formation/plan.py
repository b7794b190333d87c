"""The formation graph: which steps run on a node, in which order, and how progress is reported.

Each step renders its files, applies them, starts its service and waits on a real readiness probe (machinery.py).
Progress goes to the console and, once ZooKeeper is reachable, to /formation/<node> (and /run/pvc/formation.json).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from pvc.config import resolve
from pvc.nodeos.boot import console, data, disks
from pvc.nodeos.formation import (
    ceph,
    daemons,
    firewall,
    frr,
    libvirt,
    network,
    patroni,
    provisioner,
    system,
    zookeeper,
)
from pvc.nodeos.formation.machinery import Context, Step, StepFailed
from pvc.nodeos.state.models import FormationProgress, FormationStep

STATUS_FILE = Path("/run/pvc/formation.json")


def runs(service: str) -> Callable[[Context], bool]:
    """A step's condition: this node runs `service` (pvc.config.resolve.SERVICES, which `pvc config show` lists)."""
    return lambda ctx: resolve.runs(ctx.node, service)


def _data(ctx: Context) -> str:
    said: list[str] = []
    part = data.prepare(ctx.node, disks.scan([ctx.node.data_disk]), log=said.append)
    how = said[-1].removeprefix("data: ").split(" ")[0] if said else "mounted"  # reusing / creating / finishing
    return f"{how} {data.LABEL} {part}, mounted on {data.MOUNT}"


STEPS: list[Step] = [
    Step("data", _data),
    Step("system", system.step),
    Step("network", network.step),
    Step("firewall", firewall.step),  # before any service listens
    Step("zookeeper", zookeeper.step, runs("zookeeper")),
    Step("zookeeper-client", zookeeper.client_step),
    Step("ceph-config", ceph.conf_step),
    Step("ceph-mon", ceph.mon_step, runs("ceph-mon")),
    Step("ceph-mgr", ceph.mgr_step, runs("ceph-mgr")),
    Step("ceph-osd", ceph.osd_step, runs("ceph-osd")),
    Step("ceph-pools", ceph.pools_step, runs("ceph-mon")),  # created by the monitors' nodes, under a lock
    Step("patroni", patroni.step, runs("patroni")),
    Step("provisioner-db", provisioner.step, runs("patroni")),  # the API's database on the Patroni leader
    Step("frr", frr.step, runs("frr")),
    Step("libvirt", libvirt.step, runs("libvirtd")),
    Step("pvcd", daemons.pvcd_step, runs("pvcd")),
    Step("api", daemons.api_step, runs("pvc-api")),
]


def steps_for(ctx: Context) -> list[Step]:
    return [s for s in STEPS if s.when(ctx)]


class Reporter:
    """Keeps the step list; prints each change and publishes it where the API and the lab can read it."""

    def __init__(self, ctx: Context, names: list[str]) -> None:
        self.ctx = ctx
        self.progress = FormationProgress(node=ctx.node.name, steps=[FormationStep(name=n) for n in names])

    def set(self, index: int, state: str, message: str = "") -> None:
        steps = list(self.progress.steps)
        steps[index] = steps[index].model_copy(update={"state": state, "message": message, "updated": time.time()})
        done = all(s.state == "done" for s in steps)
        self.progress = self.progress.model_copy(update={"steps": steps, "done": done, "updated": time.time()})
        self.publish()

    def publish(self) -> None:
        with contextlib.suppress(OSError):
            STATUS_FILE.parent.mkdir(parents=True, exist_ok=True)
            STATUS_FILE.write_text(json.dumps(self.progress.model_dump(mode="json")))
        if self.ctx.zk is not None and self.ctx.zk.connected:
            with contextlib.suppress(Exception):  # progress is informative: never fail formation on it
                self.ctx.state.set_formation(self.progress)


def form(ctx: Context) -> bool:
    """Run the graph. True when every step is done; on a failure the console says which step, why, and the log."""
    steps = steps_for(ctx)
    rep = Reporter(ctx, [s.name for s in steps])
    total = len(steps)
    for i, step in enumerate(steps):
        tag = console.step_tag(i + 1, total, step.name)
        ctx.say(console.step_starting(tag))
        rep.set(i, "running")
        started = time.monotonic()
        try:
            message = step.run(ctx) or ""
        except StepFailed as exc:
            rep.set(i, "failed", str(exc))
            ctx.say(console.step_failed(tag, str(exc)))
            for line in exc.log.strip().splitlines()[-20:]:
                ctx.say(f"    {line}")
            ctx.say(console.failed(ctx.node.name, step.name))
            return False
        except data.DataError as exc:
            rep.set(i, "failed", str(exc))
            ctx.say(console.step_failed(tag, str(exc)))
            ctx.say(console.failed(ctx.node.name, step.name))
            return False
        rep.set(i, "done", message)
        ctx.say(console.step_done(tag, time.monotonic() - started, message))
    ctx.say(console.done(ctx.node.name, total))
    return True
