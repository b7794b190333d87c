"""A VM's stored record (models.VmSpec) around its typed definition, MAC generation, and the accelerator a node
chooses: pure functions and models."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import ValidationError

from pvc.config.secrets import vm_mac_prefix
from pvc.nodeos.daemon import hostinfo
from pvc.nodeos.state import macs
from pvc.nodeos.state.models import VmSpec
from pvc.nodeos.state.vmdef import VmDefinition

UUID = "c0ffee00-0000-4000-8000-000000000001"
KEY = "ab" * 32


def record(**definition: object) -> dict:
    d = {"name": "web1", "uuid": UUID, "memory_mib": 512, "vcpus": 2, "tags": ["web"], **definition}
    return {"uuid": UUID, "name": "web1", "node": "n1", "definition": d}


def test_a_record_reads_its_definition_and_answers_from_it():
    spec = VmSpec.model_validate_json(json.dumps(record(placement={"node_limit": ["n1"]})))
    assert spec.definition is not None and spec.refused == []
    assert (spec.memory_mib, spec.vcpus, spec.tags, spec.placement.node_limit) == (512, 2, ["web"], ["n1"])
    assert spec.migration.method is None and spec.macs == set()
    assert VmSpec.model_validate_json(spec.model_dump_json()) == spec


def test_fields_a_newer_pvc_wrote_are_ignored_when_read():
    raw = record(gpu={"model": "x"}, disks=[{"volume": "vms/a", "iops": 100}], placement={"affinity": "n2"})
    raw["colour"] = "red"
    spec = VmSpec.model_validate(raw)
    assert spec.definition is not None and spec.definition.volumes == ["vms/a"]


def test_a_definition_that_does_not_validate_leaves_the_vm_without_one():
    raw = record(memory_mib=1, disks=[{"volume": "nopool"}])
    spec = VmSpec.model_validate_json(json.dumps(raw))
    assert spec.definition is None and spec.unreadable_definition == raw["definition"]
    paths = [r.path for r in spec.refused]
    assert paths == ["memory_mib", "disks.0.volume"], spec.refused
    assert (spec.memory_mib, spec.vcpus, spec.tags) == (0, 0, [])  # it cannot start, so it reserves nothing
    assert spec.with_definition(VmDefinition(name="web1", uuid=UUID, memory_mib=64)).refused == []


def test_the_definition_is_the_records_own():
    stored = VmSpec.model_validate(record(name="other"))  # read: refused, not unreadable
    assert stored.definition is None and stored.refused[0].message.startswith("the definition is of other")
    with pytest.raises(ValidationError, match="the definition is of other"):  # made: a mistake in PVC
        VmSpec(uuid=UUID, name="web1", node="n1", definition=VmDefinition(name="other", uuid=UUID, memory_mib=64))


def test_autostart_changes_the_definition_and_nothing_else():
    spec = VmSpec.model_validate(record())
    on = spec.with_autostart(True)
    assert on.placement.autostart and on.definition.tags == ["web"] and not spec.placement.autostart
    assert on.with_autostart(True) is on
    bare = VmSpec(uuid=UUID, name="web1", node="n1")
    assert bare.with_autostart(True) is bare


def test_the_mac_prefix_is_locally_administered_unicast_and_the_clusters_own():
    prefix = vm_mac_prefix(KEY)
    first = int(prefix[:2], 16)
    assert len(prefix.split(":")) == 3 and first & 0x02 and not first & 0x01
    assert vm_mac_prefix(KEY) == prefix and vm_mac_prefix("cd" * 32) != prefix


def test_macs_are_filled_in_where_missing_and_never_reused(monkeypatch):
    d = VmDefinition.model_validate(
        {
            "name": "v",
            "memory_mib": 64,
            "nics": [{"network": 1}, {"network": 2, "mac": "02:00:00:00:00:09"}, {"network": 3}],
        }
    )
    taken = {"02:00:00:00:00:01"}
    tries = iter(
        ["02:00:00:00:00:01", "02:00:00:00:00:09", "02:00:00:00:00:02", "02:00:00:00:00:02", "02:00:00:00:00:03"]
    )
    with monkeypatch.context() as m:  # the random octets, in a known order
        m.setattr(macs, "random_mac", lambda prefix: next(tries))
        filled, made = macs.fill(d, "02:00:00", lambda m: m in taken)
    assert [n.mac for n in filled.nics] == ["02:00:00:00:00:02", "02:00:00:00:00:09", "02:00:00:00:00:03"]
    assert made == {"02:00:00:00:00:02", "02:00:00:00:00:03"}
    assert macs.fill(filled, "02:00:00", lambda m: True) == (filled, set())
    assert macs.random_mac("02:ab:cd").startswith("02:ab:cd:") and len(macs.random_mac("02:ab:cd")) == 17
    with pytest.raises(macs.NoFreeMac, match="02:ab:cd"):
        macs.fill(d, "02:ab:cd", lambda m: True)


def test_the_accelerator_is_kvm_only_where_it_boots_a_kernel(tmp_path):
    kvm = tmp_path / "kvm"
    kvm.write_text("")
    pvm = tmp_path / "kvm_pvm"
    assert hostinfo.accelerator("auto", str(kvm), str(pvm)) == ("kvm" if os.access(kvm, os.W_OK) else "tcg")
    pvm.mkdir()
    assert hostinfo.accelerator("auto", str(kvm), str(pvm)) == "tcg"  # a nested PVM host hangs a Linux kernel
    assert hostinfo.accelerator("auto", str(tmp_path / "none"), str(tmp_path / "none")) == "tcg"
    assert hostinfo.accelerator("kvm", str(tmp_path / "none")) == "kvm"  # cluster.toml's choice wins
    assert hostinfo.accelerator("tcg", str(kvm)) == "tcg"
    with pytest.raises(ValueError, match="none of auto, kvm, tcg"):
        hostinfo.accelerator("hvf")
