"""The provisioner's pure parts: user-data classification, MAC templates, the models' bounds and PATCH semantics, the
system template → VM definition fields mapping, the member list of the database's connections, and the product's
migration files."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from pvc.config.load import load_text
from pvc.nodeos.provisioner import db, migrate, models
from pvc.nodeos.provisioner.userdata import NotUserdata, classify
from pvc.nodeos.state import vmdef
from tests.harness.cluster import cluster_toml


@pytest.mark.parametrize(
    "body,kind",
    [
        ("#cloud-config\npackages: [nginx]\n", "cloud-config"),
        ("\ufeff#cloud-config\r\nusers: []\r\n", "cloud-config"),  # a BOM and CRLF, as editors write them
        ("#cloud-config\n", "cloud-config"),  # empty is a valid (empty) mapping
        (
            'Content-Type: multipart/mixed; boundary="b"\nMIME-Version: 1.0\n\n--b\n'
            "Content-Type: text/x-shellscript\n\n#!/bin/sh\ntrue\n--b--\n",
            "multipart",
        ),
    ],
)
def test_userdata_kinds(body, kind):
    assert classify(body) == kind


@pytest.mark.parametrize(
    "body,words",
    [
        ("#cloud-config\nkey: [unclosed\n", "not valid YAML at line 3"),
        ("#cloud-config\njust text\n", "YAML but not a mapping"),
        ("#cloud-config-archive\n- a\n", "accepted as a '#cloud-config' YAML document"),
        ("#include http://example.invalid/x\n", "MIME multipart message"),
        ('Content-Type: multipart/mixed; boundary="b"\n\nno parts here\n', "malformed"),
        ("Content-Type: multipart/mixed\n\n--b\n\nx\n--b--\n", "has no boundary="),
    ],
)
def test_userdata_refusals_say_what_is_accepted_or_wrong(body, words):
    with pytest.raises(NotUserdata, match=re.escape(words)):
        classify(body)


def test_mac_templates_render_unicast_macs_per_vm_and_nic():
    template = models.check_mac_template("{prefix}:{vmid}:{netid}")
    assert models.render_mac(template, "52:54:00", 7, 1) == "52:54:00:00:07:01"
    assert models.render_mac(template, "52:54:00", 65536 + 258, 2) == "52:54:00:01:02:02"
    assert models.render_mac("02:AB:{vmid}:ff:{netid}", "x", 1, 0) == "02:ab:00:01:ff:00"
    for bad, words in (
        ("{prefix}:{vmid}", "makes 5 octets"),
        ("{prefix}:{vmid}:{nic}", "unknown placeholder {nic}"),
        ("03:00:00:00:00:{netid}", "multicast"),
        ("{prefix}:{vmid}:7", "neither two hex digits"),
    ):
        with pytest.raises(ValueError, match=words):
            models.check_mac_template(bad)


def test_system_template_bounds_and_fields_of_a_vm_definition():
    t = models.SystemTemplate.model_validate(
        {"name": "web", "vcpus": 4, "memory_mib": 2048, "topology": {"cores": 2, "threads": 2}, "node_limit": ["n1"]}
    )
    fields = models.vm_fields(t)
    assert fields["vcpus"] == 4 and fields["topology"] == {"sockets": 1, "cores": 2, "threads": 2}
    assert fields["placement"] == {"node_limit": ["n1"], "selector": None, "autostart": False}
    assert fields["migration"] == {"method": None, "max_downtime_ms": None}
    assert set(fields) == {
        "description", "vcpus", "topology", "memory_mib", "machine", "firmware", "cpu_model", "serial_console",
        "graphics", "rng", "guest_agent", "placement", "migration",
    }  # fmt: skip
    for change, field in (
        ({"vcpus": "4"}, "vcpus"),  # strict: no coercion from text
        ({"memory_mib": vmdef.MAX_MEMORY_MIB + 1}, "memory_mib"),
        ({"node_limit": ["n1", "n1"]}, None),
        ({"migration_max_downtime_ms": 0}, "migration_max_downtime_ms"),
    ):
        with pytest.raises(ValidationError) as err:
            models.SystemTemplate.model_validate({"name": "x", "vcpus": 4, "memory_mib": 512, **change})
        if field:
            assert err.value.errors()[0]["loc"][0] == field


def test_a_change_keeps_what_it_does_not_name_and_checks_the_whole():
    current = models.NetworkTemplate.model_validate({"name": "n", "mac_template": "{prefix}:{vmid}:{netid}"})
    change = models.NetworkTemplateChange.model_validate({"nics": [{"network": 10}]})
    new = models.changed(current, change)
    assert new.mac_template == current.mac_template and [n.network for n in new.nics] == [10]
    cleared = models.changed(new, models.NetworkTemplateChange.model_validate({"mac_template": None}))
    assert cleared.mac_template is None and cleared.nics == new.nics
    assert "name" not in models.ProfileChange.model_fields  # a PATCH never renames
    with pytest.raises(ValidationError, match="names its OVA"):
        models.changed(
            models.Profile.model_validate({"name": "p", "system_template": "s"}),
            models.ProfileChange.model_validate({"kind": "ova"}),
        )
    with pytest.raises(ValidationError):  # field bounds hold in the change itself
        models.SystemTemplateChange.model_validate({"vcpus": 0})


def test_storage_disks_need_a_size_or_an_image_and_unique_ids():
    ok = models.StorageTemplate.model_validate(
        {
            "name": "s",
            "disks": [{"id": "sda", "pool": "vms", "image": "deb"}, {"id": "sdb", "pool": "vms", "size": "2G"}],
        }
    )
    assert [d.size for d in ok.disks] == [None, 2 * 1024**3]
    with pytest.raises(ValidationError, match="give a size, an image, or both"):
        models.TemplateDisk.model_validate({"id": "sda", "pool": "vms"})
    with pytest.raises(ValidationError, match="sda is given twice"):
        models.StorageTemplate.model_validate({"name": "s", "disks": [{"id": "sda", "pool": "p", "size": 1}] * 2})


@pytest.mark.parametrize(
    "text,members",
    [
        ("10.0.0.1,10.0.0.2:5433", (("10.0.0.1", 5432), ("10.0.0.2", 5433))),
        ("[fd00::1]:6000,[fd00::2]", (("fd00::1", 6000), ("fd00::2", 5432))),
        ("pg.example:5432", (("pg.example", 5432),)),
    ],
)
def test_database_members(text, members):
    assert db.parse_members(text) == members


@pytest.mark.parametrize("text", ["", "a,,b", "a:notaport", "a:70000"])
def test_database_members_refused(text):
    with pytest.raises(ValueError):
        db.parse_members(text)


def test_the_api_connects_to_every_coordinator_as_the_app_role():
    result = load_text(cluster_toml(["n1", "n2", "n3", "n4"]))
    assert result.config is not None
    dsn = db.app_dsn(result.config, "ab" * 32)
    assert dsn.members == (("192.0.2.11", 5432), ("192.0.2.12", 5432), ("192.0.2.13", 5432))  # not n4
    assert (dsn.user, dsn.dbname) == ("pvc", "pvc") and dsn.password != db.superuser_dsn(
        result.config, "ab" * 32
    ).password


def test_the_product_migrations_load_in_order():
    found = migrate.load()
    assert [m.version for m in found] == list(range(1, len(found) + 1)) and found[0].name == "schema"
    assert migrate.latest(found) == found[-1].version
