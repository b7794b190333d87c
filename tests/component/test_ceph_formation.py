"""Ceph formed from the product's renderer and the derived secrets: the fsid and every key are the derived
ones, and the client keys work through the Python bindings."""

from __future__ import annotations

import rados

from pvc.nodeos.formation import ceph as cephform
from tests.harness.procs import wait_until


def test_cluster_uses_the_derived_fsid_and_keys(ceph):
    assert ceph.ceph_json("fsid")["fsid"] == ceph.secrets.ceph_fsid
    for entity in ("client.admin", "client.bootstrap-osd", "client.libvirt", "mgr.a"):
        assert ceph.ceph("auth", "print-key", entity).strip() == ceph.secrets.ceph_keys[entity]
    wait_until("HEALTH_OK", lambda: ceph.health() == "HEALTH_OK", 120, interval=1)


def test_libvirt_client_key_reaches_the_cluster(ceph, tmp_path):
    keyring = tmp_path / "libvirt.keyring"
    keyring.write_text(cephform.render_keyring({"client.libvirt": ceph.secrets.ceph_keys["client.libvirt"]}, {}))
    cluster = rados.Rados(conffile=str(ceph.conf), name="client.libvirt", conf={"keyring": str(keyring)})
    cluster.connect(timeout=10)
    try:
        assert cluster.get_fsid() == ceph.secrets.ceph_fsid
    finally:
        cluster.shutdown()
