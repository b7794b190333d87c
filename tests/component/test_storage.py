"""The storage layer against a real Ceph (one mon, one mgr, three bluestore OSDs)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import uuid

import pytest
import rbd

from pvc.nodeos.state.models import PoolRecord
from pvc.nodeos.storage import pools, volumes
from pvc.nodeos.storage.ceph import Connection, Missing, Refused, StorageError, Unavailable, connect, mon_command

MiB = 1024**2


@pytest.fixture(scope="module")
def cluster(ceph):
    with connect(str(ceph.conf), keyring=str(ceph.admin_keyring)) as c:
        yield c


@pytest.fixture(scope="module")
def pool(cluster):
    return pools.create_pool(cluster, "vols", pgs=8, size=3, min_size=2).name


def test_pool_create_list_size_remove(cluster):
    created = pools.create_pool(cluster, "ptest", pgs=8, size=2, min_size=1)
    assert (created.size, created.min_size, created.pgs) == (2, 1, 8)
    assert "ptest" in [p.name for p in pools.list_pools(cluster)]
    assert pools.set_size(cluster, "ptest", 3).min_size == 2
    with pytest.raises(StorageError, match="needs 4 OSDs; the cluster has 3"):
        pools.set_size(cluster, "ptest", 4)
    with pytest.raises(StorageError, match="power of two"):
        pools.create_pool(cluster, "bad", pgs=6, size=1, min_size=1)
    with pytest.raises(StorageError, match="already exists"):
        pools.create_pool(cluster, "ptest", pgs=8, size=1, min_size=1)
    with pytest.raises(Refused, match="confirm with the pool's name"):
        pools.remove_pool(cluster, "ptest", confirm=None)
    with pytest.raises(Refused):
        pools.remove_pool(cluster, "ptest", confirm="other")
    pools.remove_pool(cluster, "ptest", confirm="ptest")
    assert not cluster.pool_exists("ptest")
    with pytest.raises(Missing):
        pools.remove_pool(cluster, "ptest", confirm="ptest")


def test_ensure_pool_finishes_an_interrupted_creation(cluster):
    mon_command(cluster, "osd pool create", pool="half", pg_num=8, pgp_num=8)  # as if formation stopped here
    assert "half" not in pools.finished_pools(cluster)
    pools.ensure_pool(cluster, "half", pgs=8, size=2, min_size=1)
    assert "half" in pools.finished_pools(cluster)
    assert (pools.get_pool(cluster, "half").size, pools.get_pool(cluster, "half").min_size) == (2, 1)
    pools.ensure_pool(cluster, "single", pgs=8, size=1, min_size=1)  # no redundancy, when asked for
    assert pools.get_pool(cluster, "single").size == 1 and "single" in pools.finished_pools(cluster)
    for name in ("half", "single"):
        pools.remove_pool(cluster, name, confirm=name)


def test_connection_is_lazy_maps_ceph_errors_and_reconnects(ceph, pool, tmp_path):
    conn = Connection(str(ceph.conf), keyring=str(ceph.admin_keyring))

    def open_missing(c):
        with c.open_ioctx(pool) as ioctx:
            rbd.Image(ioctx, "nosuch")

    with pytest.raises(Missing, match="Ceph refused"):
        conn.run(open_missing)
    first = conn.cluster()
    conn.drop()
    assert conn.run(lambda c: c.pool_exists(pool)) and conn.cluster() is not first
    conn.close()
    with pytest.raises(Unavailable, match="no Ceph configuration"):
        Connection(str(tmp_path / "none.conf")).cluster()
    nowhere = tmp_path / "nowhere.conf"
    nowhere.write_text("[global]\nmon host = 127.0.0.1:9\n")
    unreachable = Connection(str(nowhere), timeout=1, retry_after=60)
    with pytest.raises(Unavailable, match="cannot connect to Ceph"):
        unreachable.cluster()
    with pytest.raises(Unavailable, match="unreachable moments ago"):  # no new attempt for retry_after seconds
        unreachable.run(lambda c: c.pool_exists(pool))


def test_volume_create_resize_rename_copy_remove(cluster, pool):
    vol = volumes.create_volume(cluster, pool, "v1", 64 * MiB)
    assert vol.size == 64 * MiB and vol.snapshots == []
    with pytest.raises(StorageError, match="already exists"):
        volumes.create_volume(cluster, pool, "v1", MiB)
    assert volumes.resize_volume(cluster, pool, "v1", 128 * MiB).size == 128 * MiB
    with pytest.raises(Refused, match="would destroy data"):
        volumes.resize_volume(cluster, pool, "v1", MiB)
    with volumes.image(cluster, pool, "v1") as img:
        img.write(b"pvc-data" * 100, 4096)
    volumes.rename_volume(cluster, pool, "v1", "v2")
    with pytest.raises(Missing):
        volumes.get_volume(cluster, pool, "v1")
    copy = volumes.copy_volume(cluster, pool, "v2", "v3")
    assert copy.size == 128 * MiB
    with volumes.image(cluster, pool, "v3", read_only=True) as img:
        assert img.read(4096, 800) == b"pvc-data" * 100
    for name in ("v2", "v3"):
        volumes.remove_volume(cluster, pool, name)
    assert [v.name for v in volumes.list_volumes(cluster, pool)] == []


def test_snapshots_rollback_protect_clone(cluster, pool):
    volumes.create_volume(cluster, pool, "base", 32 * MiB)
    with volumes.image(cluster, pool, "base") as img:
        img.write(b"before", 0)
    snap = volumes.create_snapshot(cluster, pool, "base", "s1")
    assert snap.name == "s1" and not snap.protected
    with volumes.image(cluster, pool, "base") as img:
        img.write(b"after!", 0)
    volumes.rollback_snapshot(cluster, pool, "base", "s1")
    with volumes.image(cluster, pool, "base", read_only=True) as img:
        assert img.read(0, 6) == b"before"
    clone = volumes.clone_volume(cluster, pool, "base", "s1", "child")
    assert clone.parent == f"{pool}/base@s1"
    assert volumes.list_snapshots(cluster, pool, "base")[0].protected  # cloning protects
    with pytest.raises(Refused, match="has clones"):
        volumes.protect_snapshot(cluster, pool, "base", "s1", protect=False)
    with pytest.raises(Refused, match="protected"):
        volumes.remove_snapshot(cluster, pool, "base", "s1")
    with pytest.raises(Refused, match="has clones"):
        volumes.remove_volume(cluster, pool, "base")
    volumes.remove_volume(cluster, pool, "child")
    volumes.protect_snapshot(cluster, pool, "base", "s1", protect=False)
    volumes.remove_snapshot(cluster, pool, "base", "s1")
    with pytest.raises(Missing):
        volumes.remove_snapshot(cluster, pool, "base", "s1")
    volumes.remove_volume(cluster, pool, "base")


def _upload(cluster, ceph, pool, name, path, fmt):
    with open(path, "rb") as fh:
        conf, keyring = str(ceph.conf), str(ceph.admin_keyring)
        return volumes.upload(cluster, conf, pool, name, fh, path.stat().st_size, fmt, keyring=keyring)


def _download(cluster, pool, name) -> bytes:
    size, chunks = volumes.read_stream(cluster, pool, name)
    data = b"".join(chunks)
    assert len(data) == size
    return data


def test_upload_download_round_trips(cluster, pool, ceph, tmp_path):
    raw = tmp_path / "disk.raw"
    data = os.urandom(3 * MiB) + b"\0" * (2 * MiB) + os.urandom(MiB // 2)
    raw.write_bytes(data)
    assert _upload(cluster, ceph, pool, "upraw", raw, "raw").size == len(data)
    assert hashlib.sha256(_download(cluster, pool, "upraw")).hexdigest() == hashlib.sha256(data).hexdigest()
    qcow = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)], check=True)
    _upload(cluster, ceph, pool, "upqcow", qcow, "qcow2")
    assert hashlib.sha256(_download(cluster, pool, "upqcow")).hexdigest() == hashlib.sha256(data).hexdigest()
    with pytest.raises(StorageError, match="unsupported image format"):
        _upload(cluster, ceph, pool, "x", raw, "vmdk")
    with pytest.raises(StorageError, match="the upload ended after 0 of 10 bytes"):
        volumes.upload(cluster, str(ceph.conf), pool, "short", io.BytesIO(b""), 10)
    with pytest.raises(Missing):
        volumes.get_volume(cluster, pool, "short")  # a failed upload leaves no volume


def test_a_snapshot_downloads_at_its_own_size(cluster, pool):
    volumes.create_volume(cluster, pool, "grown", MiB)
    with volumes.image(cluster, pool, "grown") as img:
        img.write(b"x" * MiB, 0)
    volumes.create_snapshot(cluster, pool, "grown", "small")
    volumes.resize_volume(cluster, pool, "grown", 2 * MiB)
    size, chunks = volumes.read_stream(cluster, pool, "grown", "small")
    assert size == MiB and b"".join(chunks) == b"x" * MiB
    with pytest.raises(Missing, match="no snapshot"):
        volumes.read_stream(cluster, pool, "grown", "nosuch")
    volumes.remove_volume(cluster, pool, "grown")


def test_full_pool_refuses_growth_unless_forced(cluster, pool):
    full = PoolRecord(
        name=pool, id=1, size=3, min_size=2, pgs=8, stored_bytes=85, capacity_bytes=100, used_percent=85.0, objects=1
    )
    with pytest.raises(Refused, match=r"85% full \(85 of 100 bytes, over 80%\)"):
        pools.check_room(full, force=False, action="create volume x")
    pools.check_room(full, force=True, action="create volume x")
    pools.check_room(pools.get_pool(cluster, pool), force=False, action="create")  # the real pool is nearly empty


def test_missing_objects(cluster, pool):
    with pytest.raises(Missing, match="no pool"):
        volumes.list_volumes(cluster, "nosuchpool")
    with pytest.raises(Missing, match="no volume"):
        volumes.get_volume(cluster, pool, f"nope-{uuid.uuid4().hex[:6]}")
