"""Ceph formed from the product's renderer and the derived secrets: the fsid and every key are the derived
ones, and the client keys work through the Python bindings."""

from __future__ import annotations

import grp
import pwd
from pathlib import Path

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


def test_daemons_run_as_the_ceph_user_and_own_their_data(ceph):
    """--setuser/--setgroup ceph (formation's command line): every daemon's real and effective ids are ceph's, and
    the cluster works with the data folders, keyrings and OSD blocks they own."""
    ceph_ids = {str(pwd.getpwnam("ceph").pw_uid)}
    daemons = [p for p in ceph.procs if p.alive()]
    assert {p.name.split(".")[0] for p in daemons} >= {"ceph-mon", "ceph-mgr", "ceph-osd"}
    for proc in daemons:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
        assert set(status["Uid"].split()) == ceph_ids, (proc.name, status["Uid"])
        assert set(status["Gid"].split()) == {str(grp.getgrnam("ceph").gr_gid)}, (proc.name, status["Gid"])
    for path in [ceph.dir / "mon" / "ceph-a", *(ceph.dir / "osd").glob("ceph-*/block")]:
        assert pwd.getpwuid(path.stat().st_uid).pw_name == "ceph", path
    wait_until("HEALTH_OK", lambda: ceph.health() == "HEALTH_OK", 120, interval=1)
