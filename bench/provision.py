"""Benchmark: `pvc vm create` from a profile, on a 3-node container lab with the real test guest.

Measures, in one run:
- raw baseline: `rbd clone` + `rbd resize` of the image's snapshot on a node (what a create's disk step costs at
  least);
- one create without --start, from the request to the task's end (`--wait`);
- one create with --start to "cloud-init finished" in the guest, the create step and the guest's boot apart (the
  boot is TCG here);
- 20 creates from the profile at once (no start; 20 `pvc vm create` processes in parallel), from the first request
  to the last task's end: copy-on-write clones, so the goal is that 20 creates cost less than 2× one.

Prints a table and writes bench/results/provision.json. Run as root, from the repository root:
`.venv/bin/python -m bench.provision [--count 20]`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import report
from pvc.image.build import DEFAULT_OUT, build
from pvc.image.guest import DEFAULT_OUT as GUEST_OUT
from pvc.image.guest import build_guest
from tests.harness.labctl import Lab, running
from tests.harness.labprov import PROFILE, Guest, make_profile, pvc_ok
from tests.harness.labscenarios import primary
from tests.harness.procs import end_on_signals

GOAL_RATIO = 2.0


def timed_create(lab: Lab, name: str, *extra: str) -> float:
    t0 = time.monotonic()
    pvc_ok(lab, "vm", "create", name, "--profile", PROFILE, "--wait", *extra, timeout=900)
    return time.monotonic() - t0


def submit(lab: Lab, name: str) -> str:
    """`pvc vm create` without --wait: the task it answers with at once."""
    out = pvc_ok(lab, "vm", "create", name, "--profile", PROFILE, "--format", "json")
    return str(json.loads(out)["id"])


def until_done(lab: Lab, tasks: list[str]) -> None:
    """Until every task has ended (one `pvc task list` every 0.2 s, not a process per task), each succeeded."""
    while True:
        states = {t["id"]: t["state"] for t in lab.api_json("task", "list") if t["id"] in tasks}
        if len(states) == len(tasks) and all(s in ("succeeded", "failed") for s in states.values()):
            assert set(states.values()) == {"succeeded"}, states
            return
        time.sleep(0.2)


def batch(lab: Lab, names: list[str]) -> float:
    """The creates of `names` sent at once (parallel `pvc vm create` processes), until the last task ends."""
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        tasks = list(pool.map(lambda name: submit(lab, name), names))
    until_done(lab, tasks)
    return time.monotonic() - t0


def raw_clone(lab: Lab) -> float:
    """`rbd clone` + `rbd resize` + `rbd rm` on the primary, timed inside the node (no API, no task)."""
    script = (
        "import subprocess as s, time\n"
        "t0 = time.monotonic()\n"
        "s.run(['rbd', 'clone', 'vms/guest@image', 'vms/rawclone'], check=True)\n"
        "s.run(['rbd', 'resize', '--no-progress', '--size', '4G', 'vms/rawclone'], check=True)\n"
        "t1 = time.monotonic()\n"
        "s.run(['rbd', 'rm', '--no-progress', 'vms/rawclone'], check=True)\n"
        "print(t1 - t0)\n"
    )
    script = f"python3 -c {shlex.quote(script)}"
    return float(lab.sh(primary(lab), script).strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--out", default=report.default_out("provision"))
    args = parser.parse_args()
    end_on_signals()
    image = build(Path(DEFAULT_OUT), "zstd", progress=print)
    guest = build_guest(Path(GUEST_OUT), progress=print)
    with tempfile.TemporaryDirectory(prefix="pvc-bench-prov-") as tmp:
        work = Path(tmp)
        (work / "client").mkdir()
        (work / "prov").mkdir()
        with running(image.squashfs, work / "lab", "pvcbprov", 17378, work / "client") as lab:
            upload = make_profile(lab, guest.qcow2, work / "prov", memory="256M")
            raw = raw_clone(lab)
            one = batch(lab, ["single"])
            t0 = time.monotonic()
            create_started = timed_create(lab, "booted", "--start")
            web = Guest(lab, "booted")
            web.wait_ssh()
            web.ssh("cloud-init status --wait", timeout=900)
            to_finished = time.monotonic() - t0
            total = batch(lab, [f"many{i:02d}" for i in range(args.count)])
    ratio = total / one
    rows = [
        ("pvc image upload (test guest qcow2)", f"{upload:.1f} s"),
        ("raw: rbd clone + resize on a node", f"{raw:.2f} s"),
        ("one create (no start): request to task end", f"{one:.2f} s"),
        ("one create --start: create step", f"{create_started:.2f} s"),
        ("one create --start: to cloud-init finished", f"{to_finished:.1f} s"),
        ("  of which the guest's boot (TCG)", f"{to_finished - create_started:.1f} s"),
        (f"{args.count} creates at once", f"{total:.2f} s"),
        (f"{args.count} creates / one create (goal < {GOAL_RATIO:g})", f"{ratio:.2f}"),
    ]
    print(report.table(("measure", "value"), rows))
    report.write(
        {
            "image_upload_s": upload,
            "raw_clone_resize_s": raw,
            "one_create_s": one,
            "create_step_with_start_s": create_started,
            "create_to_cloud_init_finished_s": to_finished,
            "boot_s": to_finished - create_started,
            "count": args.count,
            "many_creates_s": total,
            "ratio": ratio,
            "goal_ratio": GOAL_RATIO,
            "goal_met": ratio < GOAL_RATIO,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
