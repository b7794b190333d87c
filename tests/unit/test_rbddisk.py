"""RBD disk XML and the client.libvirt secret (pure functions)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pvc.config.secrets import libvirt_secret_uuid
from pvc.nodeos.state import domxml
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


def test_complete_disks_adds_monitors_and_secret_only_where_missing():
    xml = (
        "<domain><name>v</name><memory>1</memory><devices>"
        "<disk type='network' device='disk'><source protocol='rbd' name='vms/d1'/><target dev='vda'/></disk>"
        "<disk type='network' device='disk'><auth username='other'><secret type='ceph' uuid='u'/></auth>"
        "<source protocol='rbd' name='vms/d2'><host name='198.51.100.1' port='1'/></source></disk>"
        "<disk type='file'><source file='/x'/></disk></devices></domain>"
    )
    secret = libvirt_secret_uuid(KEY)
    out = ET.fromstring(rbddisk.complete_disks(xml, MONS, secret))
    d1, d2 = out.findall("./devices/disk[@type='network']")
    assert [(h.get("name"), h.get("port")) for h in d1.findall("source/host")] == [
        ("192.0.2.1", "6789"),
        ("192.0.2.2", "6789"),
    ]
    assert d1.find("auth").get("username") == "libvirt" and d1.find("auth/secret").get("uuid") == secret
    assert d2.find("auth").get("username") == "other" and len(d2.findall("source/host")) == 1
    assert domxml.parse(ET.tostring(out, encoding="unicode")).rbd_disks == ["vms/d1", "vms/d2"]
    plain = "<domain><name>v</name><memory>1</memory><devices/></domain>"
    assert rbddisk.complete_disks(plain, MONS, secret) == plain


def test_disk_and_secret_xml():
    secret = libvirt_secret_uuid(KEY)
    disk = ET.fromstring(rbddisk.disk_xml("vms", "d1", MONS, secret))
    assert disk.find("source").get("name") == "vms/d1" and disk.find("auth/secret").get("uuid") == secret
    assert disk.find("driver").get("cache") == "none"
    sec = ET.fromstring(rbddisk.secret_xml(secret))
    assert sec.findtext("uuid") == secret and sec.find("usage").get("type") == "ceph"


def test_host_of_lock_owner_addresses():
    assert locks.host_of("192.0.2.11:0/1234") == "192.0.2.11"
    assert locks.host_of("v1:192.0.2.11:6789/0") == "192.0.2.11"
    assert locks.host_of("[v2:192.0.2.12:0/5,v1:192.0.2.12:0/5]") == "192.0.2.12"
