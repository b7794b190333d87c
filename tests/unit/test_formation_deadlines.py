"""Every formation step has a deadline for the whole of it (machinery.run_step): a step that hangs fails formation
with the step's name and what it was waiting on, on the console and in what `pvc-lab up` reports."""

from __future__ import annotations

import re
import threading
import time

import pytest

from pvc.config.secrets import cluster_secrets
from pvc.nodeos.boot import console
from pvc.nodeos.formation import machinery, plan
from pvc.nodeos.formation.machinery import Context, Step, StepFailed, doing, run, run_step, wait_for
from tests.harness.examples import example_cluster


@pytest.fixture(autouse=True)
def short_grace(monkeypatch):
    monkeypatch.setattr(machinery, "GRACE", 0.2)


def test_a_call_that_cannot_be_interrupted_fails_at_the_deadline_naming_it():
    never = threading.Event()

    def step() -> str:
        with doing("opening the libvirt connection qemu:///system"):
            never.wait()  # stands for a C call Python cannot interrupt
        return "unreachable"

    started = time.monotonic()
    with pytest.raises(StepFailed) as info:
        run_step("libvirt", 1.0, step)
    assert time.monotonic() - started < 3
    message = str(info.value)
    assert "did not finish within its deadline of 1 s" in message
    assert re.search(r"stuck in opening the libvirt connection qemu:///system \(for \d+ s\)", message), message


def test_a_probe_is_cut_to_the_step_deadline_and_reports_its_last_observation():
    answers = iter(range(1000))

    def step() -> None:
        wait_for("the service to answer", lambda: next(answers) < 0 and "never", 900, 0.1)

    started = time.monotonic()
    with pytest.raises(StepFailed, match=r"timed out after \d+ s waiting for the service to answer: not yet \(False\)"):
        run_step("svc", 1.0, step)
    assert time.monotonic() - started < 2  # the probe's own 900 s were cut to the step's deadline


def test_a_probe_that_hangs_inside_is_named_with_the_last_thing_it_saw():
    calls = []
    never = threading.Event()

    def probe() -> bool:
        calls.append(1)
        if len(calls) == 3:
            never.wait()
        raise StepFailed("connection refused")

    with pytest.raises(StepFailed) as info:
        run_step("libvirt", 1.0, lambda: wait_for("libvirtd to answer", probe, 600, 0.05))
    message = str(info.value)
    assert "stuck in waiting for libvirtd to answer" in message and "last probe: connection refused" in message


def test_a_subprocess_never_outlives_the_deadline():
    started = time.monotonic()
    with pytest.raises(StepFailed, match="sleep 30 did not finish in 1 s"):
        run_step("slow", 1.0, lambda: run("sleep", "30", timeout=120))
    assert time.monotonic() - started < 3


def test_outside_formation_the_helpers_keep_their_own_timeouts():
    assert machinery.watch() is None
    assert machinery.bounded(42.0) == 42.0
    assert run("true") == ""


def test_errors_and_results_come_back_to_the_caller():
    assert run_step("ok", 5, lambda: "fine") == "fine"
    with pytest.raises(ValueError, match="boom"):
        run_step("bad", 5, lambda: (_ for _ in ()).throw(ValueError("boom")))


def test_a_hanging_step_fails_formation_on_the_console_and_in_the_lab_report(tmp_path, monkeypatch):
    cfg = example_cluster("lab-1node")
    node = cfg.nodes[0]
    lines: list[str] = []
    ctx = Context(
        cfg=cfg,
        node=node,
        config_path=tmp_path / "cluster.toml",
        join_key=cfg.cluster.join_key or "",
        secrets=cluster_secrets(cfg.cluster.join_key or "", [n.name for n in cfg.coordinators]),
        say=lambda m: lines.append(console.line(m)),
    )
    never = threading.Event()

    def hangs(ctx: Context) -> str:
        with doing("calling secretDefineXML on qemu:///system"):
            never.wait()
        return ""

    monkeypatch.setattr(plan, "STATUS_FILE", tmp_path / "formation.json")
    monkeypatch.setattr(plan, "STEPS", [Step("first", lambda ctx: "ok", timeout=5), Step("libvirt", hangs, timeout=1)])
    assert plan.form(ctx) == "failed"
    text = "\n".join(lines)
    assert "[1/2] first: done" in text
    assert "[2/2] libvirt: FAILED: did not finish within its deadline of 1 s; stuck in calling secretDefineXML" in text
    assert console.failed(node.name, "libvirt") in text
    problem = console.last_problem(text)  # what `pvc-lab up` prints when the cluster does not form
    assert problem is not None and problem.startswith(console.failed(node.name, "libvirt"))
    assert "stuck in calling secretDefineXML on qemu:///system" in problem
    progress = (tmp_path / "formation.json").read_text()
    assert '"state":"failed"' in progress.replace(" ", "") and "secretDefineXML" in progress
