"""Field-level rules of the schema and the wording/positions of their errors."""

from __future__ import annotations

import json

import pytest

from pvc.config.load import accepted_keys, key_string, load_text
from pvc.config.schema import ClusterFile


def errors(text: str):
    return load_text(text, "c.toml").errors


def one(text: str):
    errs = errors(text)
    assert len(errs) == 1, [e.format("c.toml") for e in errs]
    return errs[0]


@pytest.fixture
def p3(example_text):
    return example_text("production-3node")


def test_unknown_top_level_key_suggests(p3):
    err = one(p3.replace("[fencing]", "[fenceing]"))
    assert err.key == "fenceing" and "did you mean 'fencing'?" in err.message
    assert err.line == p3.splitlines().index("[fencing]") + 1


def test_unknown_key_in_array_of_tables_suggests(p3):
    text = p3.replace("coordinator = true", "cordinator = true", 2)
    errs = errors(text)
    assert {e.key for e in errs} == {"nodes[0].cordinator", "nodes[1].cordinator"}
    assert all("did you mean 'coordinator'?" in e.message and "accepted here:" in e.message for e in errs)


def test_unknown_key_in_inline_table_points_at_it(p3):
    text = p3.replace('ip = { upstream = "10.100.0.1"', 'ip = { upstrem = "10.100.0.1"')
    errs = errors(text)
    err = next(e for e in errs if e.key == "nodes[0].ip.upstrem")
    line = text.splitlines()[err.line - 1]
    assert line[err.column - 1 :].startswith("upstrem") and "did you mean 'upstream'?" in err.message


def test_wrong_type_names_both_types(p3):
    err = one(p3.replace("id = 2\n", 'id = "2"\n'))
    assert err.key == "nodes[1].id" and err.message == "expected an integer, got a string"


def test_boolean_is_not_an_integer(p3):
    err = one(p3.replace("id = 2\n", "id = true\n"))
    assert err.message == "expected an integer, got a boolean"


def test_schema_version(p3):
    err = one(p3.replace("schema = 1", "schema = 2"))
    assert err.key == "schema" and err.line == 7 and "schema = 1" in err.message


def test_missing_required_key(p3):
    err = one(p3.replace('domain = "pvc1.example.com"\n', ""))
    assert err.key == "cluster.domain" and "required key 'domain' is missing" in err.message


def test_literal_lists_accepted_values(p3):
    err = one(p3.replace('on_failure = "none"', 'on_failure = "reboot"'))
    assert "'reboot' is not accepted" in err.message and "'none'" in err.message and "'migrate'" in err.message


@pytest.mark.parametrize(
    "old,new,needle",
    [
        ('"10.0.0.3" }', '"10.0.0.3/24" }', "prefix length"),
        ('"10.0.0.3" }', '"10.0.0.300" }', "not an IPv4 address"),
        ('subnet = "10.0.0.0/24"', 'subnet = "10.0.0.1/24"', 'the subnet is "10.0.0.0/24"'),
        ('subnet = "10.0.0.0/24"', 'subnet = "10.0.0.0"', "no prefix length"),
        ("d8:d3:85:00:00:03", "d8:d3:85:00:00", "not a MAC address"),
        ("d8:d3:85:00:00:03", "01:00:5e:00:00:03", "multicast"),
        ('timezone = "Europe/Berlin"', 'timezone = "Mars/Olympus"', "not a known time zone"),
        ('timezone = "Europe/Berlin"', 'timezone = "' + "x" * 300 + '"', "not a known time zone"),  # found by fuzzing
        ('timezone = "Europe/Berlin"', 'timezone = "../../etc/passwd"', "not a known time zone"),
        ('osd_memory_target = "4G"', 'osd_memory_target = "lots"', "not a size"),
        ('osd_memory_target = "4G"', 'osd_memory_target = "100M"', "at least 939524096"),
        ('name = "hv3"', 'name = "HV_3"', "not a valid node name"),
        ('join_key_file = "join.key"', 'join_key = "XX6a' + "0" * 60 + '"', "64 lower-case hex"),
        ("ssh-ed25519 AAAAC3", "ssh-foo AAAAC3", "not an SSH public key"),
    ],
)
def test_scalar_types_say_what_they_accept(p3, old, new, needle):
    err = one(p3.replace(old, new, 1) if old in p3 else pytest.fail(f"example lacks {old!r}"))
    assert needle in err.message


def test_file_references_must_be_usable_paths(p3):
    err = one(
        p3.replace('password = "example-change-me"', 'password_file = "' + "x" * 300 + '"', 1)
    )  # found by fuzzing
    assert err.key == "nodes[0].ipmi.password_file" and "not a usable file path" in err.message


def test_join_key_inline_or_file_not_both(p3):
    err = one(p3.replace('timezone = "Europe/Berlin"', 'timezone = "Europe/Berlin"\njoin_key = "' + "0" * 64 + '"'))
    assert err.key == "cluster" and "only one of" in err.message


def test_disk_selector_rejects_bare_kernel_name(p3):
    err = one(p3.replace('data_disk = { model = "INTEL SSDSC2KB240G8*" }', 'data_disk = { path = "/dev/sda" }', 1))
    assert err.key == "nodes[0].data_disk" and "kernel device name" in err.message


def test_disk_selector_accepts_kernel_glob_with_size(p3):
    text = p3.replace(
        'data_disk = { model = "INTEL SSDSC2KB240G8*" }',
        'data_disk = { path = "/dev/sda", size_min = "100G" }',
        1,
    )
    assert load_text(text).valid


def test_disk_selector_needs_a_criterion(p3):
    err = one(p3.replace('data_disk = { model = "INTEL SSDSC2KB240G8*" }', "data_disk = {}", 1))
    assert "at least one of" in err.message


def test_disk_selector_size_range(p3):
    text = p3.replace(
        'data_disk = { model = "INTEL SSDSC2KB240G8*" }',
        'data_disk = { size_min = "2T", size_max = "1T" }',
        1,
    )
    assert "larger than 'size_max'" in one(text).message


def test_ipmi_password_or_file(p3):
    text = p3.replace(', password = "example-change-me" }', " }", 1)
    err = one(text)
    assert err.key == "nodes[0].ipmi" and "give one of 'password' or 'password_file'" in err.message


def test_managed_network_requires_subnet(p3):
    text = p3 + '\n[[client_networks]]\nname = "lan"\ntype = "managed"\nvni = 5\n'
    err = one(text)
    assert err.key == "client_networks[1]" and "'subnet'" in err.message and "'gateway'" in err.message


def test_pool_pgs_power_of_two(p3):
    assert "power of two" in one(p3.replace("pgs = 128", "pgs = 100")).message


def test_tls_needs_both_files(p3):
    err = one(p3 + '\n[api]\ntls_cert_file = "c.pem"\n')
    assert err.key == "api" and "tls_key_file" in err.message


def test_reserved_user_name(p3):
    assert "system account" in one(p3.replace('name = "admin"', 'name = "ceph"')).message


def test_key_string():
    assert key_string(("nodes", 1, "ip", "cluster")) == "nodes[1].ip.cluster"
    assert key_string(("a b", "c")) == '"a b".c'
    assert key_string(()) == ""


def test_accepted_keys_walks_the_schema():
    assert "coordinator" in accepted_keys(("nodes", 0))
    assert accepted_keys(("nodes", 0, "ip")) == ["upstream", "cluster", "storage"]
    assert "schema" in accepted_keys(())
    assert accepted_keys(("nope",)) == []


def test_json_schema_exports():
    doc = ClusterFile.model_json_schema(by_alias=True)
    assert "schema" in doc["properties"] and "nodes" in doc["required"]
    json.dumps(doc)


def test_derived_facts_of_the_file(example_text):
    cfg = load_text(example_text("lab-3node"), "c.toml").config
    assert cfg is not None
    assert cfg.zookeeper_hosts() == "198.51.100.11:2181,198.51.100.12:2181,198.51.100.13:2181"
    assert [name for name, _ in cfg.core_networks()] == ["upstream", "cluster", "storage"]
    no_storage = cfg.model_copy(update={"network": cfg.network.model_copy(update={"storage": None})})
    assert [name for name, _ in no_storage.core_networks()] == ["upstream", "cluster"]


def test_a_vm_may_choose_every_cluster_migration_method():
    from typing import get_args

    from pvc.config.choices import VM_MIGRATION_METHODS, MigrationMethod

    assert set(get_args(MigrationMethod)) < set(VM_MIGRATION_METHODS)


def test_default_timers_are_the_soaked_ones(example_text):
    """keepalive 1 s, dead after 4: what issue 12's 10-minute soak under two CPU burners found safe (docs/runtime.md).
    `pvc config init` writes them for a production cluster; a lab, all of whose nodes share one machine, keeps 2/5."""
    from pvc.config.example import Plan, render
    from pvc.config.schema import Timers

    assert (Timers().keepalive_interval, Timers().dead_after) == (1, 4)
    for plan, expected in ((Plan(3, lab=False), (1, 4)), (Plan(3, lab=True), (2, 5))):
        cfg = load_text(render(plan, "ab" * 32), "c.toml").config
        assert cfg is not None
        assert (cfg.timers.keepalive_interval, cfg.timers.dead_after) == expected, plan
    lab = load_text(example_text("lab-3node"), "lab-3node.toml").config
    assert lab is not None and (lab.timers.keepalive_interval, lab.timers.dead_after) == (2, 5)
