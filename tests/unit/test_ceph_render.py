"""The Ceph renderer's output is read back by the real Ceph tools."""

from __future__ import annotations

import subprocess

from pvc.config.secrets import cluster_secrets, new_join_key
from pvc.nodeos.formation import ceph as cephform
from tests.harness.examples import example_cluster


def test_mon_keyring_is_read_by_ceph_authtool(tmp_path):
    secrets = cluster_secrets("ab" * 32, ["hv1", "hv2"])
    keyring = tmp_path / "mon.keyring"
    keyring.write_text(cephform.mon_keyring(secrets))
    listed = subprocess.run(
        ["ceph-authtool", str(keyring), "--list"], capture_output=True, text=True, check=True
    ).stdout
    for entity in ("mon.", "client.admin", "client.bootstrap-osd", "client.libvirt", "mgr.hv1", "mgr.hv2"):
        assert f"[{entity}]" in listed and secrets.ceph_keys[entity] in listed
    assert 'caps mon = "allow *"' in listed


def test_monmap_from_a_production_file(tmp_path):
    cfg = example_cluster("production-5node")
    secrets = cluster_secrets(new_join_key(), [n.name for n in cfg.nodes])  # the example names a join key file
    params = cephform.params_for(cfg, secrets)
    assert params.mons == [("hv1", "10.0.1.1"), ("hv2", "10.0.1.2"), ("hv3", "10.0.1.3")]
    monmap = tmp_path / "monmap"
    subprocess.run(cephform.monmaptool_args(params, str(monmap)), check=True, capture_output=True)
    printed = subprocess.run(["monmaptool", "--print", str(monmap)], capture_output=True, text=True, check=True).stdout
    assert f"fsid {secrets.ceph_fsid}" in printed
    assert "v2:10.0.1.2:3300/0,v1:10.0.1.2:6789/0] mon.hv2" in printed
    conf = cephform.render_conf(params)
    assert "public network = 10.0.1.0/24" in conf and f"fsid = {secrets.ceph_fsid}" in conf
