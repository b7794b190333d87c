"""The formation graph: which steps run on a node, in which order, and how progress is reported.

Each step renders its files, applies them, starts its service and waits on a real readiness probe (steps.py).
Progress goes to the console and, once ZooKeeper is reachable, to /formation/<node> (and /run/pvc/formation.json).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from pvc.nodeos.boot import data, disks
from pvc.nodeos.formation import ceph, daemons, firewall, frr, libvirt, network, patroni, system, zookeeper
from pvc.nodeos.formation.steps import Context, Step, StepFailed

STATUS_FILE = Path("/run/pvc/formation.json")
DONE_MARKER = "PVC-FORMATION-DONE"
FAILED_MARKER = "PVC-FORMATION-FAILED"


def _coordinator(ctx: Context) -> bool:
    return ctx.node.coordinator


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
    Step("zookeeper", zookeeper.step, _coordinator),
    Step("zookeeper-client", zookeeper.client_step),
    Step("ceph-config", ceph.conf_step),
    Step("ceph-mon", ceph.mon_step, _coordinator),
    Step("ceph-mgr", ceph.mgr_step, _coordinator),
    Step("ceph-osd", ceph.osd_step, lambda ctx: bool(ctx.node.osds)),
    Step("ceph-pools", ceph.pools_step, _coordinator),
    Step("patroni", patroni.step, _coordinator),
    Step("frr", frr.step),
    Step("libvirt", libvirt.step),
    Step("pvcd", daemons.pvcd_step),
    Step("api", daemons.api_step, _coordinator),
]


def steps_for(ctx: Context) -> list[Step]:
    return [s for s in STEPS if s.when(ctx)]


class Reporter:
    """Keeps the step list; prints each change and publishes it where the API and the lab can read it."""

    def __init__(self, ctx: Context, names: list[str]) -> None:
        from pvc.nodeos.state.models import FormationProgress, FormationStep

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
            from pvc.nodeos.state.store import ClusterState

            with contextlib.suppress(Exception):  # progress is informative: never fail formation on it
                ClusterState(self.ctx.zk).set_formation(self.progress)


def form(ctx: Context) -> bool:
    """Run the graph. True when every step is done; on a failure the console says which step, why, and the log."""
    steps = steps_for(ctx)
    rep = Reporter(ctx, [s.name for s in steps])
    total = len(steps)
    for i, step in enumerate(steps):
        tag = f"[{i + 1}/{total}] {step.name}"
        ctx.say(f"{tag}: starting")
        rep.set(i, "running")
        started = time.monotonic()
        try:
            message = step.run(ctx) or ""
        except StepFailed as exc:
            rep.set(i, "failed", str(exc))
            ctx.say(f"{tag}: FAILED: {exc}")
            for line in exc.log.strip().splitlines()[-20:]:
                ctx.say(f"    {line}")
            ctx.say(f"{FAILED_MARKER} node={ctx.node.name} step={step.name}")
            return False
        except data.DataError as exc:
            rep.set(i, "failed", str(exc))
            ctx.say(f"{tag}: FAILED: {exc}")
            ctx.say(f"{FAILED_MARKER} node={ctx.node.name} step={step.name}")
            return False
        rep.set(i, "done", message)
        ctx.say(f"{tag}: done in {time.monotonic() - started:.1f} s: {message}")
    ctx.say(f"{DONE_MARKER} node={ctx.node.name} steps={total}")
    return True
