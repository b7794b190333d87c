"""The monitors QEMU dials, the client.libvirt secret and lock owners (pure functions)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pvc.config.secrets import libvirt_secret_uuid
from pvc.nodeos.storage import locks, rbddisk

KEY = "ab" * 32
MONS = [("192.0.2.1", 6789), ("192.0.2.2", 6789)]


def test_mons_from_conf_takes_the_v1_addresses():
    conf = (
        "[global]\nfsid = x\nmon host = [v2:192.0.2.1:3300,v1:192.0.2.1:6789],[v2:192.0.2.2:3300,v1:192.0.2.2:6789]\n"
    )
    assert rbddisk.mons_from_conf(conf) == MONS
    assert rbddisk.mons_from_conf("mon_host = 10.0.0.1:6789 10.0.0.2\n") == [("10.0.0.1", 6789), ("10.0.0.2", 6789)]
    assert rbddisk.mons_from_conf("[global]\n") == []


def test_secret_xml():
    secret = libvirt_secret_uuid(KEY)
    sec = ET.fromstring(rbddisk.secret_xml(secret))
    assert sec.findtext("uuid") == secret and sec.find("usage").get("type") == "ceph"


def test_host_of_lock_owner_addresses():
    assert locks.host_of("192.0.2.11:0/1234") == "192.0.2.11"
    assert locks.host_of("v1:192.0.2.11:6789/0") == "192.0.2.11"
    assert locks.host_of("[v2:192.0.2.12:0/5,v1:192.0.2.12:0/5]") == "192.0.2.12"
