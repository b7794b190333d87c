"""The storage layer against a real Ceph (one mon, one mgr, three bluestore OSDs)."""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
import rbd

from pvc.nodeos.state.models import PoolRecord
from pvc.nodeos.storage import pools, upload, volumes
from pvc.nodeos.storage.ceph import (
    Connection,
    Invalid,
    Missing,
    Refused,
    StorageError,
    TooLarge,
    Unavailable,
    connect,
    mon_command,
)
from tests.harness import images

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


def _upload(cluster, ceph, pool, name, path, fmt, spool, length="file", upload_max=None):
    with open(path, "rb") as fh:
        size = path.stat().st_size if length == "file" else length
        user = upload.CephUser(str(ceph.conf))
        return upload.upload(cluster, user, pool, name, fh, size, fmt, spool=spool, upload_max=upload_max)


def _download(cluster, pool, name) -> bytes:
    size, chunks = volumes.read_stream(cluster, pool, name)
    data = b"".join(chunks)
    assert len(data) == size
    return data


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_upload_download_round_trips(cluster, pool, ceph, tmp_path):
    spool = tmp_path / "spool"
    raw = tmp_path / "disk.raw"
    data = images.raw_disk(raw, data_mib=2, hole_mib=8)  # RBD objects are 4 MiB: the second one is all zeros
    assert _upload(cluster, ceph, pool, "upraw", raw, "raw", spool).size == len(data)
    assert _sha(_download(cluster, pool, "upraw")) == _sha(data)
    assert _upload(cluster, ceph, pool, "upchunked", raw, "raw", spool, length=None).size == len(data)
    assert _sha(_download(cluster, pool, "upchunked")) == _sha(data)
    for name, fmt, subformat in (
        ("upqcow", "qcow2", None),
        ("upvmdk", "vmdk", "monolithicSparse"),
        ("upstream", "vmdk", "streamOptimized"),
    ):
        image_file = images.converted(raw, tmp_path / f"{name}.{fmt}", fmt, subformat)
        assert _upload(cluster, ceph, pool, name, image_file, fmt, spool).size == len(data)
        assert _sha(_download(cluster, pool, name)) == _sha(data), name
    for name in ("upraw", "upchunked", "upqcow", "upvmdk", "upstream"):  # the zeros were never written: sparse
        with volumes.image(cluster, pool, name, read_only=True) as img:
            assert _written(img, 4 * MiB, 4 * MiB) == [], name
            assert _written(img, 0, 4 * MiB) != [], name
    assert list(spool.iterdir()) == []
    with pytest.raises(StorageError, match="unsupported image format"):
        _upload(cluster, ceph, pool, "x", raw, "vhdx", spool)
    with pytest.raises(StorageError, match="the upload ended after 0 of 10 bytes"):
        upload.upload(cluster, upload.CephUser(str(ceph.conf)), pool, "short", io.BytesIO(b""), 10, spool=spool)
    with pytest.raises(Missing):
        volumes.get_volume(cluster, pool, "short")  # a failed upload leaves no volume
    for name in ("upraw", "upchunked", "upqcow", "upvmdk", "upstream"):
        volumes.remove_volume(cluster, pool, name)


def _written(img, offset, length):
    """The RBD objects of `img` holding data in [offset, offset + length)."""
    found = []

    def seen(off, length, exists):
        if exists:
            found.append(off)

    img.diff_iterate(offset, length, None, seen, whole_object=True)
    return found


@pytest.fixture
def public_dir():
    """A folder anyone may read (tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="pvc-public-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _refused(cluster, ceph, pool, tmp_path, name, path, fmt, match, **kw):
    """The upload is refused with `match`, and leaves no volume and nothing in the spool."""
    spool = tmp_path / "spool"
    with pytest.raises(StorageError, match=match) as refusal:
        _upload(cluster, ceph, pool, name, path, fmt, spool, **kw)
    with pytest.raises(Missing):
        volumes.get_volume(cluster, pool, name)
    assert not spool.exists() or list(spool.iterdir()) == []
    return refusal.value


def test_uploads_that_name_host_files_are_refused(cluster, pool, ceph, tmp_path, public_dir):
    """C3: an image whose header names a file of the host never reads it into a volume."""
    secret = images.host_file(tmp_path / "secret")
    public = images.host_file(public_dir / "public", mode=0o644)  # readable even by the sandbox's nobody
    backing = images.with_backing_file(tmp_path / "backing.qcow2", secret)
    exc = _refused(cluster, ceph, pool, tmp_path, "hb", backing, "qcow2", "names a backing file")
    assert isinstance(exc, Invalid) and str(secret) in str(exc)
    datafile = images.with_data_file(tmp_path / "datafile.qcow2", tmp_path / "scratch")
    _refused(cluster, ceph, pool, tmp_path, "hd", datafile, "qcow2", "names an external data file")
    extent = images.vmdk_with_extent(tmp_path / "extent.vmdk", public)
    _refused(cluster, ceph, pool, tmp_path, "he", extent, "vmdk", "extent files outside itself")
    hidden = images.vmdk_with_extent(tmp_path / "hidden.vmdk", secret)  # unreadable to nobody: qemu-img fails
    _refused(cluster, ceph, pool, tmp_path, "hh", hidden, "vmdk", "qemu-img could not inspect the image")


def test_uploads_of_the_wrong_format_size_or_name_are_refused(cluster, pool, ceph, tmp_path):
    raw = tmp_path / "disk.raw"
    images.raw_disk(raw)
    qcow = images.converted(raw, tmp_path / "disk.qcow2", "qcow2")
    _refused(cluster, ceph, pool, tmp_path, "wf1", raw, "qcow2", "Image is not in qcow2 format")
    _refused(cluster, ceph, pool, tmp_path, "wf2", qcow, "vmdk", "could not inspect the image")
    huge = images.sparse_qcow2(tmp_path / "huge.qcow2", "64T")
    exc = _refused(cluster, ceph, pool, tmp_path, "huge", huge, "qcow2", r"virtual size is 70368744177664 bytes")
    assert f"the room left in pool '{pool}' under the 80% guard" in str(exc)
    small = images.sparse_qcow2(tmp_path / "small.qcow2", "8M")  # a small file, over the limit once converted
    exc = _refused(cluster, ceph, pool, tmp_path, "cap", small, "qcow2", "virtual size is 8388608", upload_max=4 * MiB)
    assert "[ceph] upload_max" in str(exc)
    exc = _refused(cluster, ceph, pool, tmp_path, "big", raw, "raw", "over the limit of 1048576 bytes", upload_max=MiB)
    assert isinstance(exc, TooLarge)
    for length, fmt in ((None, "raw"), (None, "qcow2")):  # a chunked body: refused once it passes the limit
        exc = _refused(
            cluster,
            ceph,
            pool,
            tmp_path,
            "chunk",
            qcow if fmt == "qcow2" else raw,
            fmt,
            "passed the limit of 1048576 bytes",
            length=length,
            upload_max=MiB,
        )
        assert isinstance(exc, TooLarge)
    for bad in ("a:b", "a/b", "-x", "a\nb", "a@b"):
        exc = _refused(cluster, ceph, pool, tmp_path, bad, raw, "raw", "the volume name")
        assert isinstance(exc, Invalid) and exc.field == "volume"


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
