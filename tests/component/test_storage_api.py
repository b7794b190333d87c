"""/api/v1/storage and `pvc storage` end to end: gunicorn with a real Ceph (and ZooKeeper) behind it.

Every route, every refusal with its status (404 unknown, 409 refusals with the figure, 400 naming the field), the
status the primary keeps in ZooKeeper, OSD out/in/removal on a fourth OSD added for the test, and upload/download
round trips (raw and qcow2) through the CLI with checksums and progress.
"""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from pvc.nodeos.state import layout
from pvc.nodeos.state.models import OsdRequest
from pvc.nodeos.storage import status, volumes
from pvc.nodeos.storage.ceph import connect
from tests.harness import images
from tests.harness.api import ApiServer
from tests.harness.cli import PVC, Cli
from tests.harness.ports import CAPPED_API_PORT, STORAGE_API_PORT
from tests.harness.procs import wait_until

S = "/api/v1/storage"
MiB = 1024**2


@pytest.fixture(scope="module")
def rados_cluster(ceph):
    with connect(str(ceph.conf)) as c:
        yield c


@pytest.fixture(scope="module")
def api(api_cluster, ceph, zookeeper, workdir):
    d = workdir / "storage-api"
    d.mkdir(exist_ok=True)
    config = d.parent / "api" / "cluster.toml"
    env = {"PVC_CEPH_CONF": str(ceph.conf)}
    with ApiServer.running(d, config, zookeeper.hosts, STORAGE_API_PORT, env=env) as server:
        server.key = api_cluster.key
        server.state = api_cluster.state
        yield server


def call(api, method, path, body=None, **kw):
    return api.call(method, S + path, body=body, key=api.key, **kw)


@pytest.fixture(scope="module")
def pool(api):
    status_code, body = call(api, "POST", "/pools", {"name": "apipool", "pgs": 8, "size": 2, "min_size": 1})
    assert status_code == 201, body
    return "apipool"


@pytest.fixture
def cli(api, tmp_path) -> Cli:
    c = Cli(tmp_path / "client")
    c.ok("connection", "add", "storage", "--address", "127.0.0.1", "--port", str(api.port), "--key", api.key)
    return c


def test_status_is_read_from_zookeeper(api, rados_cluster, cli):
    api.state.zk.delete(layout.STORAGE_STATUS) if api.state.zk.exists(layout.STORAGE_STATUS) else None
    code, body = call(api, "GET", "")
    assert code == 200 and body["health"] == "unknown" and "not measured yet" in body["checks"]["NO_MEASUREMENT"]
    # a Ceph that just started reports no usage until its mgr has the OSDs' statistics
    wait_until("usage figures", lambda: status.publish(api.state, rados_cluster, by="test").total_bytes, 30)
    code, body = call(api, "GET", "")
    assert code == 200 and body["health"].startswith("HEALTH_") and body["osds"] >= 3 and body["by"] == "test"
    assert body["total_bytes"] > 0 and any(p["name"] for p in body["pools"])
    out = cli.ok("storage", "status")
    assert "health:" in out and "osds:" in out and "up" in out
    assert cli.json("storage", "status")["osds_up"] == body["osds_up"]


def test_pool_routes_and_refusals(api, cli):
    code, body = call(api, "POST", "/pools", {"name": "p2", "pgs": 6, "size": 1, "min_size": 1})
    assert code == 400 and body["field"] == "pgs" and "power of two" in body["detail"]
    code, body = call(api, "POST", "/pools", {"name": "p2", "pgs": 8, "size": 0})
    assert code == 400 and body["field"] == "size"
    code, body = call(api, "POST", "/pools", {"name": "p2", "pgs": 8, "size": 1, "min_size": 2})
    assert code == 400 and body["field"] == "min_size"
    code, body = call(api, "POST", "/pools", {"name": "p2", "pgs": 8, "size": 9, "min_size": 1})
    assert code == 400 and body["field"] == "size" and "the cluster has" in body["detail"]
    code, body = call(api, "POST", "/pools", {"name": "bad/name"})
    assert code == 400 and body["field"] == "name"
    out = cli.ok("storage", "pool", "add", "p2", "--pgs", "8", "--size", "2", "--min-size", "1")
    assert "created pool 'p2'" in out
    assert "already exists" in cli.fails("storage", "pool", "add", "p2", "--pgs", "8", "--size", "1", "--min-size", "1")
    assert call(api, "POST", "/pools", {"name": "p2", "pgs": 8, "size": 1, "min_size": 1})[0] == 409
    code, body = call(api, "PATCH", "/pools/p2", {"size": 3})
    assert code == 200 and (body["size"], body["min_size"]) == (3, 2)
    assert "size 1, min size 1" in cli.ok("storage", "pool", "set", "p2", "--size", "1")
    assert {p["name"] for p in cli.json("storage", "pool", "list")} >= {"p2"}
    assert call(api, "GET", "/pools/nosuch")[0] == 404
    code, body = call(api, "DELETE", "/pools/p2")
    assert code == 409 and "confirm with the pool's name" in body["detail"]
    assert "confirm" in cli.fails("storage", "pool", "remove", "p2", "--confirm", "p3")
    assert cli.ok("storage", "pool", "remove", "p2", "--confirm", "p2").strip() == "removed pool 'p2'"
    assert call(api, "DELETE", "/pools/p2?confirm=p2")[0] == 404


def test_volume_routes_and_refusals(api, pool, cli):
    v = f"/pools/{pool}/volumes"
    code, body = call(api, "POST", v, {"name": "va", "size": 32 * MiB})
    assert code == 201 and body["size"] == 32 * MiB
    assert call(api, "POST", v, {"name": "va", "size": MiB})[0] == 409
    assert call(api, "POST", "/pools/nosuch/volumes", {"name": "x", "size": MiB})[0] == 404
    code, body = call(api, "POST", v, {"name": "x", "size": 0})
    assert code == 400 and body["field"] == "size"
    code, body = call(api, "PATCH", f"{v}/va", {"size": MiB})
    assert code == 409 and "would destroy data" in body["detail"]
    code, body = call(api, "PATCH", f"{v}/va", {})
    assert code == 400 and body["field"] == "size"
    assert "64.0M" in cli.ok("storage", "volume", "resize", pool, "va", "64M")
    assert "renamed" in cli.ok("storage", "volume", "rename", pool, "va", "vb")
    assert call(api, "GET", f"{v}/va")[0] == 404
    # snapshots
    s = f"{v}/vb/snapshots"
    assert call(api, "POST", s, {"name": "s1"})[0] == 201
    assert call(api, "POST", s, {"name": "s1"})[0] == 409
    assert "protected" in cli.ok("storage", "snapshot", "protect", pool, "vb", "s1")
    code, body = call(api, "DELETE", f"{s}/s1")
    assert code == 409 and "protected" in body["detail"]
    assert "cloned" in cli.ok("storage", "volume", "clone", pool, "vb", "s1", "vc")
    assert call(api, "GET", f"{v}/vc")[1]["parent"] == f"{pool}/vb@s1"
    code, body = call(api, "PATCH", f"{s}/s1", {"protected": False})
    assert code == 409 and "has clones" in body["detail"]
    assert call(api, "POST", f"{v}/vb/copy", {"name": "vd"})[0] == 201
    code, body = call(api, "POST", f"{s}/s1/rollback")
    assert code == 200 and body["name"] == "vb"
    assert call(api, "POST", f"{s}/nosnap/rollback")[0] == 404
    assert [x["name"] for x in cli.json("storage", "snapshot", "list", pool, "vb")] == ["s1"]
    assert "has clones" in cli.fails("storage", "volume", "remove", pool, "vb")
    for name in ("vc", "vd"):
        assert cli.ok("storage", "volume", "remove", pool, name).startswith("removed")
    assert "not protected" in cli.ok("storage", "snapshot", "unprotect", pool, "vb", "s1")
    assert cli.ok("storage", "snapshot", "remove", pool, "vb", "s1").startswith("removed")
    assert call(api, "DELETE", f"{v}/vb")[0] == 200
    assert call(api, "GET", f"{v}/vb/snapshots")[0] == 404


def test_full_pool_refuses_create_clone_resize_with_the_figure(api, rados_cluster, cli):
    code, _ = call(api, "POST", "/pools", {"name": "fullpool", "pgs": 8, "size": 1, "min_size": 1})
    assert code == 201
    assert call(api, "PATCH", "/pools/fullpool", {"quota_bytes": 16 * MiB})[1]["quota_bytes"] == 16 * MiB
    call(api, "POST", "/pools/fullpool/volumes", {"name": "filler", "size": 32 * MiB})
    with volumes.image(rados_cluster, "fullpool", "filler") as img:
        img.write(os.urandom(14 * MiB), 0)
        img.create_snap("s")
    wait_until(
        "the pool's use to reach ceph df",
        lambda: call(api, "GET", "/pools/fullpool")[1]["used_percent"] > 80,
        30,
        interval=0.5,
    )
    for method, path, body in (
        ("POST", "/pools/fullpool/volumes", {"name": "more", "size": MiB}),
        ("PATCH", "/pools/fullpool/volumes/filler", {"size": 64 * MiB}),
        ("POST", "/pools/fullpool/volumes/filler/clone", {"snapshot": "s", "name": "c"}),
    ):
        code, err = call(api, method, path, body)
        assert code == 409 and err["error"] == "refused", (path, err)
        assert "fullpool' is 8" in err["detail"] and "over 80%" in err["detail"] and "16777216 bytes" in err["detail"]
    message = cli.fails("storage", "volume", "add", "fullpool", "more", "1M")
    assert "% full" in message and "without force" in message
    assert "created" in cli.ok("storage", "volume", "add", "fullpool", "more", "1M", "--force")
    assert call(api, "DELETE", "/pools/fullpool?confirm=fullpool")[0] == 200


def test_upload_download_round_trips(api, pool, cli, tmp_path):
    raw = tmp_path / "disk.raw"
    data = os.urandom(3 * MiB) + b"\0" * (4 * MiB) + os.urandom(MiB + 512)
    raw.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    res = cli.run("storage", "volume", "upload", pool, "upraw", str(raw))
    assert res.returncode == 0, res.stderr
    assert "upload disk.raw: 100%" in res.stderr and "upload disk.raw: 50%" in res.stderr
    assert "(raw) to volume" in res.stdout
    back = tmp_path / "back.raw"
    res = cli.run("storage", "volume", "download", pool, "upraw", str(back))
    assert res.returncode == 0 and f"download {pool}/upraw: 100%" in res.stderr
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    for name, fmt, subformat in (("upqcow", "qcow2", None), ("upvmdk", "vmdk", "streamOptimized")):
        image_file = images.converted(raw, tmp_path / f"disk.{fmt}", fmt, subformat)
        assert image_file.stat().st_size < len(data)
        res = cli.run("storage", "volume", "upload", pool, name, str(image_file))  # format from the file's magic
        assert res.returncode == 0 and f"({fmt})" in res.stdout, res.stderr
        res = subprocess.run(
            [str(PVC), "storage", "volume", "download", pool, name, "-", "--quiet"], capture_output=True, env=cli.env
        )
        assert res.returncode == 0 and hashlib.sha256(res.stdout).hexdigest() == digest, name
    code, body = api.chunked("PUT", f"{S}/pools/{pool}/volumes/upchunked/data", _pieces(raw), key=api.key)
    assert code == 201 and body["size"] == len(data), body
    res = subprocess.run(
        [str(PVC), "storage", "volume", "download", pool, "upchunked", "-", "--quiet"], capture_output=True, env=cli.env
    )
    assert res.returncode == 0 and hashlib.sha256(res.stdout).hexdigest() == digest
    assert "already exists" in cli.fails("storage", "volume", "upload", pool, "upraw", str(raw))
    code, err = api.call("PUT", f"{S}/pools/{pool}/volumes/x/data?format=vhdx", key=api.key, raw=b"abc")
    assert code == 400 and err["field"] == "format"
    code, err = api.call("GET", f"{S}/pools/{pool}/volumes/nosuch/data", key=api.key)
    assert code == 404
    assert list(api.spool.glob("*")) == []
    for name in ("upraw", "upqcow", "upvmdk", "upchunked"):
        call(api, "DELETE", f"/pools/{pool}/volumes/{name}")


def _pieces(path, size=MiB):
    with open(path, "rb") as fh:
        while piece := fh.read(size):
            yield piece


def _nothing_left(api, pool, name):
    assert call(api, "GET", f"/pools/{pool}/volumes/{name}")[0] == 404, f"volume {name} was created"
    assert list(api.spool.glob("*")) == [], "the spool kept a file"


def test_uploads_that_name_host_files_are_refused(api, pool, tmp_path):
    """C3/H1 through the API: 400, no volume, nothing in the spool."""
    secret = images.host_file(tmp_path / "secret")
    hostile = {
        "backing": (images.with_backing_file(tmp_path / "b.qcow2", secret), "qcow2", "names a backing file"),
        "datafile": (images.with_data_file(tmp_path / "d.qcow2", tmp_path / "scratch"), "qcow2", "external data"),
        "extent": (images.vmdk_with_extent(tmp_path / "e.vmdk", secret), "vmdk", "could not inspect the image"),
    }
    for name, (path, fmt, needle) in hostile.items():
        code, err = api.call(
            "PUT", f"{S}/pools/{pool}/volumes/{name}/data?format={fmt}", key=api.key, raw=path.read_bytes()
        )
        assert code == 400 and err["field"] == "body" and needle in err["detail"], (name, err)
        _nothing_left(api, pool, name)
    raw = tmp_path / "disk.raw"
    images.raw_disk(raw)
    code, err = api.call("PUT", f"{S}/pools/{pool}/volumes/notq/data?format=qcow2", key=api.key, raw=raw.read_bytes())
    assert code == 400 and "Image is not in qcow2 format" in err["detail"], err
    _nothing_left(api, pool, "notq")
    huge = images.sparse_qcow2(tmp_path / "huge.qcow2", "64T")
    code, err = api.call("PUT", f"{S}/pools/{pool}/volumes/huge/data?format=qcow2", key=api.key, raw=huge.read_bytes())
    assert code == 400 and "virtual size is 70368744177664 bytes, over the limit" in err["detail"], err
    _nothing_left(api, pool, "huge")
    for bad in ("x:log_file=%2Ftmp%2Fpwned", "a%2Fb", "a%0Ab", "-x"):
        code, err = api.call("PUT", f"{S}/pools/{pool}/volumes/{bad}/data?format=qcow2", key=api.key, raw=b"QFI")
        assert code == 400 and err["field"] == "volume", (bad, err)
    assert [v["name"] for v in call(api, "GET", f"/pools/{pool}/volumes")[1] if "x" in v["name"]] == []


def test_a_content_length_over_the_limit_is_refused_before_the_body(api, pool):
    headers = {"X-Api-Key": api.key, "Content-Type": "application/octet-stream", "Content-Length": str(2**50)}
    code, err = api.headers_only("PUT", f"{S}/pools/{pool}/volumes/toobig/data?format=raw", headers)
    assert code == 413 and err["error"] == "too large", err
    assert f"the upload is {2**50} bytes, over the limit of " in err["detail"]
    assert f"the room left in pool '{pool}' under the 80% guard" in err["detail"]
    _nothing_left(api, pool, "toobig")


@pytest.fixture(scope="module")
def capped(api_cluster, ceph, zookeeper, workdir):
    """The API with `[ceph] upload_max = "4M"` in its cluster.toml."""
    d = workdir / "capped-api"
    d.mkdir(exist_ok=True)
    config = d / "cluster.toml"
    config.write_text((workdir / "api" / "cluster.toml").read_text() + '[ceph]\nupload_max = "4M"\n')
    env = {"PVC_CEPH_CONF": str(ceph.conf)}
    with ApiServer.running(d, config, zookeeper.hosts, CAPPED_API_PORT, env=env) as server:
        server.key = api_cluster.key
        yield server


def test_the_configured_upload_limit(capped, pool, cli, tmp_path):
    big = tmp_path / "big.raw"
    with open(big, "wb") as fh:
        fh.truncate(64 * MiB)  # sparse: quick to make, and long enough to be refused while it is being sent
    c = Cli(tmp_path / "capped-client")
    c.ok("connection", "add", "capped", "--address", "127.0.0.1", "--port", str(capped.port), "--key", capped.key)
    line = c.fails("storage", "volume", "upload", pool, "big", str(big), "--quiet")
    assert line == (
        f"pvc: too large: the upload is {64 * MiB} bytes, over the limit of {4 * MiB} bytes "
        "([ceph] upload_max in cluster.toml)"
    ), line
    _nothing_left(capped, pool, "big")
    code, err = capped.chunked("PUT", f"{S}/pools/{pool}/volumes/big/data", _pieces(big), key=capped.key)
    assert code == 413 and f"passed the limit of {4 * MiB} bytes" in err["detail"], err
    _nothing_left(capped, pool, "big")
    small = images.sparse_qcow2(tmp_path / "small.qcow2", "8M")
    code, err = capped.call(
        "PUT", f"{S}/pools/{pool}/volumes/big/data?format=qcow2", key=capped.key, raw=small.read_bytes()
    )
    assert code == 400 and "virtual size is 8388608 bytes, over the limit of 4194304 bytes" in err["detail"], err
    _nothing_left(capped, pool, "big")


def test_osds_out_in_and_safe_removal(api, ceph, cli, pool):
    osds = call(api, "GET", "/osds")[1]
    assert len(osds) >= 3 and all(o["up"] and o["inside"] and o["size_bytes"] > 0 and o["node"] for o in osds)
    assert "osd.0" in cli.ok("storage", "osd", "list")
    assert call(api, "GET", "/osds/99")[0] == 404
    code, err = call(api, "GET", "/osds/abc")
    assert code == 400 and err["field"] == "osd"
    # a pool with min_size 3 on three OSDs: no OSD may go
    assert call(api, "POST", "/pools", {"name": "strict", "pgs": 8, "size": 3, "min_size": 3})[0] == 201
    code, err = call(api, "DELETE", "/osds/0")
    assert (
        code == 409
        and "pool 'strict' needs 3 OSDs up and in (min_size); without osd.0 2 would be left" in err["detail"]
    )
    assert call(api, "DELETE", "/pools/strict?confirm=strict")[0] == 200
    # a fourth OSD (a sparse-file bluestore OSD, as the node's formation would make of a disk)
    new = ceph.add_osd()
    wait_until(f"osd.{new} up", lambda: call(api, "GET", f"/osds/{new}")[1]["up"], 60, interval=0.5)
    assert f"osd.{new} is out" in cli.ok("storage", "osd", "out", str(new))
    assert call(api, "GET", f"/osds/osd.{new}")[1]["inside"] is False
    assert f"osd.{new} is in" in cli.ok("storage", "osd", "in", f"osd.{new}")
    code, err = call(api, "DELETE", f"/osds/{new}")
    assert code == 409 and ("not safe" in err["detail"] or "is up" in err["detail"]), err
    cli.ok("storage", "osd", "out", str(new))
    wait_until(f"osd.{new} to be safe to destroy", lambda: _safe(api, new), 60, interval=0.5)
    code, err = call(api, "DELETE", f"/osds/{new}")
    assert code == 409 and "is up: stop its daemon" in err["detail"]
    ceph.stop_osd(new)
    wait_until(f"osd.{new} down", lambda: not call(api, "GET", f"/osds/{new}")[1]["up"], 60, interval=0.5)
    # Ceph calls a stopped OSD safe once every PG is active+clean again: refused until then, then done
    removed = wait_until(
        f"osd.{new} removed", lambda: cli.run("storage", "osd", "remove", str(new)).stdout.strip(), 60, interval=1
    )
    assert removed == f"removed osd.{new}"
    assert call(api, "GET", f"/osds/{new}")[0] == 404


def _safe(api, osd: int) -> bool:
    code, err = call(api, "DELETE", f"/osds/{osd}")
    return code == 409 and "is up: stop its daemon" in err["detail"]


def test_osd_add_is_recorded_for_the_node(api, cli):
    code, task = call(api, "POST", "/osds", {"node": "n2", "path": "/dev/disk/by-id/nvme-*"})
    assert code == 202 and task["kind"] == "osd-add" and task["target"] == "n2" and task["state"] == "pending"
    request = api.state.get(layout.osd_request(task["id"]), OsdRequest)[0]
    assert request.node == "n2" and request.selector == {"path": "/dev/disk/by-id/nvme-*"}
    assert any(r["id"] == task["id"] for r in call(api, "GET", "/osds/requests")[1])
    assert call(api, "POST", "/osds", {"node": "nosuch", "path": "/dev/x"})[0] == 404
    code, err = call(api, "POST", "/osds", {"node": "n2"})
    assert code == 400 and err["field"] == "path"
    assert "requested: waiting for n1" in cli.ok("storage", "osd", "add", "n1", "--serial", "S3*")
