"""/api/v1/provisioner and `pvc image` / `pvc provisioner` end to end: gunicorn with a real Patroni (two PostgreSQL
members), Ceph and ZooKeeper behind it.

The API starts on an empty database and applies the migrations itself; every CRUD route and refusal of templates,
userdata and profiles (bounds 400 naming the field, references 400 naming what is missing, in use 409 naming the
users, taken names 409, unknown 404); base images uploaded through the volumes' upload path into an RBD volume with a
protected snapshot that clones come from; writes through the API across a Patroni switchover.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading

import pytest

from pvc.nodeos.provisioner import db, migrate
from pvc.nodeos.storage import pools as storage_pools
from pvc.nodeos.storage import volumes
from pvc.nodeos.storage.ceph import connect
from tests.component.conftest import PROVISIONER_POOL, PROVISIONER_VNI
from tests.harness.cli import Cli
from tests.harness.cluster import JOIN_KEY

P = "/api/v1/provisioner"
MiB = 1024**2
VNI = PROVISIONER_VNI
POOL = PROVISIONER_POOL
CLOUD_CONFIG = "#cloud-config\npackages: [nginx]\nruncmd:\n  - [touch, /var/tmp/made-by-pvc]\n"
MULTIPART = """Content-Type: multipart/mixed; boundary="PVC"
MIME-Version: 1.0

--PVC
Content-Type: text/cloud-config; charset="us-ascii"

#cloud-config
packages: [htop]

--PVC
Content-Type: text/x-shellscript; charset="us-ascii"

#!/bin/sh
echo hello > /var/tmp/hello

--PVC--
"""


@pytest.fixture(scope="module")
def api(provisioner_api):
    return provisioner_api


def call(api, method, path, body=None, **kw):
    return api.call(method, P + path, body=body, key=api.key, **kw)


@pytest.fixture
def cli(api, tmp_path) -> Cli:
    c = Cli(tmp_path / "client")
    c.ok("connection", "add", "prov", "--from-config", str(api.config), "--address", "127.0.0.1", "--port",
         str(api.port))  # fmt: skip
    return c


def refused(api, method, path, body, status, field=None):
    code, err = call(api, method, path, body)
    assert code == status, (code, err)
    if field is not None:
        assert err["field"] == field, err
    return err["detail"]


def test_the_api_applies_the_migrations_to_an_empty_database(api, patroni):
    assert call(api, "GET", "/profiles") == (200, [])  # the first transaction of a worker migrates
    conn = db.app_dsn(patroni.cfg, JOIN_KEY, patroni.members_string()).connect()
    assert migrate.version(conn) == migrate.latest()
    conn.close()


def test_system_templates(api, cli):
    t = "/templates/system"
    code, made = call(api, "POST", t, {"name": "small", "vcpus": 2, "memory_mib": 1024})
    assert code == 201 and made["machine"] == "q35" and made["serial_console"] is True and made["profiles"] == []
    assert refused(api, "POST", t, {"name": "small", "vcpus": 1, "memory_mib": 512}, 409, "name").endswith(
        "'small' already exists"
    )
    for body, field, words in (
        ({"name": "x", "vcpus": 0, "memory_mib": 512}, "vcpus", "greater than or equal to 1"),
        ({"name": "x", "vcpus": 256, "memory_mib": 512}, "vcpus", "less than or equal to 255"),
        ({"name": "x", "vcpus": 1, "memory_mib": 8}, "memory_mib", "greater than or equal to 16"),
        ({"name": "x", "vcpus": 1, "memory_mib": "1G"}, "memory_mib", "valid integer"),
        ({"name": "x", "vcpus": 1, "memory_mib": 512, "machine": "isapc"}, "machine", "'pc' or 'q35'"),
        ({"name": "x", "vcpus": 1, "memory_mib": 512, "cpu_model": "a b"}, "cpu_model", "not a CPU model"),
        ({"name": "x/y", "vcpus": 1, "memory_mib": 512}, "name", "contains '/'"),
        ({"name": "x", "vcpus": 1, "memory_mib": 512, "gpu": True}, "gpu", "unknown field"),
        ({"name": "x", "vcpus": 1, "memory_mib": 512, "node_limit": ["n1", "n9"]}, "node_limit.1", "no node 'n9'"),
        ({"name": "x", "vcpus": 1}, "memory_mib", "is missing"),
    ):
        assert words in refused(api, "POST", t, body, 400, field), (body, field)
    detail = refused(api, "POST", t, {"name": "x", "vcpus": 4, "memory_mib": 512, "topology": {"cores": 2}}, 400)
    assert "1 sockets × 2 cores × 1 threads = 2, but vcpus is 4" in detail
    # modify: only the fields given; the whole is checked again
    code, changed = call(api, "PATCH", f"{t}/small", {"vcpus": 4, "topology": {"cores": 2, "threads": 2}})
    assert code == 200 and changed["vcpus"] == 4 and changed["memory_mib"] == 1024 and changed["updated"] > 0
    assert "but vcpus is 3" in refused(api, "PATCH", f"{t}/small", {"vcpus": 3}, 400)
    assert refused(api, "PATCH", f"{t}/small", {"vcpus": None}, 400, "vcpus")
    code, cleared = call(api, "PATCH", f"{t}/small", {"topology": None, "vcpus": 3})
    assert code == 200 and cleared["topology"] is None
    assert call(api, "PATCH", f"{t}/nosuch", {"vcpus": 1})[0] == 404
    # the CLI
    out = cli.ok("provisioner", "template", "system", "add", "web", "--vcpus", "2", "--memory", "2G", "--no-rng")
    assert "added system template web" in out and "2048M" in out
    shown = cli.json("provisioner", "template", "system", "info", "web")
    assert (shown["memory_mib"], shown["rng"], shown["node_limit"]) == (2048, False, [])
    cli.ok("provisioner", "template", "system", "modify", "web", "--node-limit", "n1,n2", "--migration-method", "live")
    assert cli.json("provisioner", "template", "system", "info", "web")["node_limit"] == ["n1", "n2"]
    cli.ok("provisioner", "template", "system", "modify", "web", "--node-limit", "", "--migration-method", "")
    shown = cli.json("provisioner", "template", "system", "info", "web")
    assert shown["node_limit"] == [] and shown["migration_method"] is None
    assert "memory_mib" in cli.fails(
        "provisioner", "template", "system", "add", "tiny", "--vcpus", "1", "--memory", "1M"
    )
    table = cli.ok("provisioner", "template", "system", "list")
    assert table.splitlines()[0].split()[:3] == ["NAME", "VCPUS", "MEMORY"] and "small" in table and "web" in table
    assert "vcpus: 3" in cli.ok("provisioner", "template", "system", "info", "small", "--format", "yaml")
    assert cli.ok("provisioner", "template", "system", "remove", "web").strip() == "removed system template web"
    assert call(api, "GET", f"{t}/web")[0] == 404
    assert "no system template 'web'" in cli.fails("provisioner", "template", "system", "remove", "web")


def test_network_templates(api, cli):
    t = "/templates/network"
    code, made = call(
        api, "POST", t, {"name": "lan", "nics": [{"network": VNI}], "mac_template": "{prefix}:{vmid}:{netid}"}
    )
    assert code == 201 and made["nics"] == [{"network": VNI, "model": "virtio"}]
    assert "no network with VNI 4999" in refused(
        api, "POST", t, {"name": "x", "nics": [{"network": VNI}, {"network": 4999}]}, 400, "nics.1.network"
    )
    for mac, words in (
        ("{prefix}:{vmid}:00", "has no {netid}"),
        ("{prefix}:{netid}", "makes 4 octets"),
        ("{prefix}:00:{vmid}:{netid}", "makes 7 octets"),
        ("01:00:00:00:00:{netid}", "multicast"),
        ("{prefix}:{vm}:{netid}", "unknown placeholder {vm}"),
        ("{prefix}:zz:{netid}", "neither two hex digits"),
    ):
        assert words in refused(api, "POST", t, {"name": "x", "mac_template": mac}, 400, "mac_template"), mac
    too_many = [{"network": VNI}] * 9
    assert "at most 8" in refused(api, "POST", t, {"name": "x", "nics": too_many}, 400, "nics")
    code, changed = call(api, "PATCH", f"{t}/lan", {"nics": [{"network": VNI, "model": "e1000e"}, {"network": VNI}]})
    assert code == 200 and [n["model"] for n in changed["nics"]] == ["e1000e", "virtio"]
    assert changed["mac_template"] == "{prefix}:{vmid}:{netid}"
    out = cli.ok("provisioner", "template", "network", "add", "two", "--nic", str(VNI), "--nic", f"{VNI}:rtl8139")
    assert "eth1:" in out and "rtl8139" in out
    assert "VNI[:MODEL]" in cli.run("provisioner", "template", "network", "add", "bad", "--nic", "x").stderr
    cli.ok("provisioner", "template", "network", "modify", "two", "--no-nics")
    assert cli.json("provisioner", "template", "network", "info", "two")["nics"] == []
    assert {x["name"] for x in cli.json("provisioner", "template", "network", "list")} >= {"lan", "two"}
    cli.ok("provisioner", "template", "network", "remove", "two")


def test_storage_templates(api, cli):
    t = "/templates/storage"
    code, made = call(api, "POST", t, {"name": "blank", "disks": [{"id": "sda", "pool": POOL, "size": "10G"}]})
    assert code == 201 and made["disks"] == [
        {"id": "sda", "pool": POOL, "size": 10 * 1024**3, "image": None, "bus": "virtio"}
    ]
    for disks, field, words in (
        ([{"id": "sda", "pool": "nopool", "size": MiB}], "disks.0.pool", "no pool 'nopool'"),
        ([{"id": "sda", "pool": POOL, "image": "noimage"}], "disks.0.image", "image 'noimage' does not exist"),
        ([{"id": "sda", "pool": POOL}], "disks.0", "give a size, an image, or both"),
        (
            [{"id": "sda", "pool": POOL, "size": MiB}, {"id": "sda", "pool": POOL, "size": MiB}],
            "disks",
            "sda is given twice",
        ),
        ([{"id": "SDA", "pool": POOL, "size": MiB}], "disks.0.id", "not a disk id"),
        ([{"id": "sda", "pool": POOL, "size": "lots"}], "disks.0.size", "is not a size"),
    ):
        assert words in refused(api, "POST", t, {"name": "x", "disks": disks}, 400, field), field
    out = cli.ok("provisioner", "template", "storage", "add", "two", "--disk", f"sda:pool={POOL},size=20G",
                 "--disk", f"sdb:pool={POOL},size=1G,bus=scsi")  # fmt: skip
    assert "sda:" in out and "20.0G" in out and "(scsi)" in out
    assert "use pool=" in cli.run("provisioner", "template", "storage", "add", "x", "--disk", "sda:color=red").stderr
    cli.ok("provisioner", "template", "storage", "modify", "two", "--disk", f"vda:pool={POOL},size=2G")
    assert [d["id"] for d in cli.json("provisioner", "template", "storage", "info", "two")["disks"]] == ["vda"]
    cli.ok("provisioner", "template", "storage", "remove", "two")


def test_userdata(api, cli, tmp_path):
    u = "/userdata"
    code, made = call(api, "POST", u, {"name": "web", "body": CLOUD_CONFIG})
    assert code == 201 and made["kind"] == "cloud-config" and made["body"] == CLOUD_CONFIG
    code, made = call(api, "POST", u, {"name": "multi", "body": MULTIPART, "description": "two parts"})
    assert code == 201 and made["kind"] == "multipart" and made["size"] == len(MULTIPART)
    for body, words in (
        ("#cloud-config\npackages: [a\n", "not valid YAML at line 3, column 1"),
        ("#cloud-config\n- one\n- two\n", "YAML but not a mapping"),
        ("#!/bin/sh\necho hi\n", "accepted as a '#cloud-config' YAML document"),
        ("packages: [nginx]\n", "this one starts with 'packages: [nginx]'"),
        (MULTIPART.replace("--PVC--", ""), "no closing boundary"),
        (MULTIPART.replace("packages: [htop]", "packages: [htop"), "part 1 (cloud-config) is not valid YAML"),
        ("Content-Type: text/plain\n\nhello\n", "is text/plain, not multipart"),
        ("#cloud-config\n" + "a: b\n" * 60000, "at most 262144 characters"),
    ):
        assert words in refused(api, "POST", u, {"name": "x", "body": body}, 400, "body"), words
    listed = call(api, "GET", u)[1]
    assert {x["name"] for x in listed} >= {"web", "multi"} and all("body" not in x for x in listed)
    doc = tmp_path / "ud.yaml"
    doc.write_text("#cloud-config\nhostname: ignored\n")
    out = cli.ok("provisioner", "userdata", "add", "fromfile", str(doc), "--description", "from a file")
    assert "added userdata document fromfile" in out and "---\n#cloud-config" in out
    res = cli.run("provisioner", "userdata", "add", "stdin", "-", stdin=CLOUD_CONFIG)
    assert res.returncode == 0, res.stderr
    assert "packages: [nginx]" in cli.ok("provisioner", "userdata", "info", "stdin")
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/sh\n")
    assert "field: body" in cli.fails("provisioner", "userdata", "modify", "stdin", str(bad))
    cli.ok("provisioner", "userdata", "modify", "stdin", "--description", "changed")
    shown = cli.json("provisioner", "userdata", "info", "stdin")
    assert shown["description"] == "changed" and shown["body"] == CLOUD_CONFIG
    assert "cannot read /nonexistent" in cli.fails("provisioner", "userdata", "add", "x", "/nonexistent")
    for name in ("fromfile", "stdin"):
        cli.ok("provisioner", "userdata", "remove", name)


def test_profiles_and_references(api, cli):
    for path, body in (
        ("/templates/system", {"name": "p-sys", "vcpus": 1, "memory_mib": 512}),
        ("/templates/network", {"name": "p-net", "nics": [{"network": VNI}]}),
        ("/templates/storage", {"name": "p-disk", "disks": [{"id": "sda", "pool": POOL, "size": MiB}]}),
        ("/userdata", {"name": "p-ud", "body": CLOUD_CONFIG}),
    ):
        assert call(api, "POST", path, body)[0] == 201
    full = {
        "name": "web",
        "system_template": "p-sys",
        "network_template": "p-net",
        "storage_template": "p-disk",
        "userdata": "p-ud",
        "arguments": {"package": "nginx"},
        "metadata": {"public-keys": ["ssh-ed25519 AAAA admin"]},
    }
    for field in ("system_template", "network_template", "storage_template", "userdata"):
        detail = refused(api, "POST", "/profiles", {**full, field: "missing"}, 400, field)
        assert detail.endswith("'missing' does not exist"), detail
    assert "names its OVA" in refused(api, "POST", "/profiles", {**full, "kind": "ova"}, 400)
    assert "OVA 'nosuch' does not exist" in refused(
        api, "POST", "/profiles", {**full, "kind": "ova", "ova": "nosuch", "storage_template": None}, 400, "ova"
    )
    assert "set by PVC" in refused(
        api, "POST", "/profiles", {**full, "metadata": {"instance-id": "i"}}, 400, "metadata"
    )
    assert "not an argument name" in refused(api, "POST", "/profiles", {**full, "arguments": {"a-b": "x"}}, 400)
    code, made = call(api, "POST", "/profiles", full)
    assert code == 201 and made["kind"] == "image" and made["arguments"] == {"package": "nginx"}
    # each template and the userdata now name the profile, and cannot go while it uses them
    for path in ("/templates/system/p-sys", "/templates/network/p-net", "/templates/storage/p-disk", "/userdata/p-ud"):
        assert call(api, "GET", path)[1]["profiles"] == ["web"], path
        assert "is in use by profile web" in refused(api, "DELETE", path, None, 409), path
    assert "in use by profile web" in cli.fails("provisioner", "template", "system", "remove", "p-sys")
    # modify: null clears an optional reference; a missing one is refused and nothing changes
    code, changed = call(api, "PATCH", "/profiles/web", {"network_template": None, "arguments": {}})
    assert code == 200 and changed["network_template"] is None and changed["arguments"] == {}
    assert refused(api, "PATCH", "/profiles/web", {"userdata": "gone"}, 400, "userdata")
    assert call(api, "GET", "/profiles/web")[1]["userdata"] == "p-ud"
    assert call(api, "DELETE", "/templates/network/p-net")[0] == 200  # no longer used
    # the CLI
    out = cli.ok("provisioner", "profile", "add", "cli", "--system-template", "p-sys", "--userdata", "p-ud",
                 "--arg", "a=1", "--arg", "b=two", "--meta", "role=web")  # fmt: skip
    assert "added profile cli" in out and "a=1, b=two" in out
    assert "missing" in cli.fails("provisioner", "profile", "add", "bad", "--system-template", "missing")
    assert (
        "key=value"
        in cli.run("provisioner", "profile", "add", "bad", "--system-template", "p-sys", "--arg", "x").stderr
    )
    cli.ok("provisioner", "profile", "modify", "cli", "--userdata", "", "--no-args")
    shown = cli.json("provisioner", "profile", "info", "cli")
    assert shown["userdata"] is None and shown["arguments"] == {} and shown["metadata"] == {"role": "web"}
    rows = cli.ok("provisioner", "profile", "list").splitlines()
    assert rows[0].split() == ["NAME", "KIND", "SYSTEM", "NETWORK", "STORAGE", "USERDATA"] and len(rows) >= 3
    for name in ("cli", "web"):
        assert cli.ok("provisioner", "profile", "remove", name).startswith("removed profile")
    for path in ("/templates/system/p-sys", "/templates/storage/p-disk", "/userdata/p-ud"):
        assert call(api, "DELETE", path)[0] == 200


def test_image_upload_clone_and_removal(api, ceph, cli, tmp_path):
    data = os.urandom(2 * MiB) + b"\0" * (3 * MiB) + os.urandom(MiB)
    raw = tmp_path / "base.raw"
    raw.write_bytes(data)
    qcow = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)], check=True)
    res = cli.run("image", "upload", "debian", str(qcow), "--pool", POOL, "--description", "the base")
    assert res.returncode == 0, res.stderr
    assert "upload base.qcow2: 100%" in res.stderr and f"as image debian: {POOL}/debian@image" in res.stdout
    with connect(str(ceph.conf)) as c:
        snaps = volumes.list_snapshots(c, POOL, "debian")
        assert [(s.name, s.protected) for s in snaps] == [("image", True)]
        # a VM disk made from it is a copy-on-write clone of the protected snapshot, with the image's bytes
        clone = volumes.clone_volume(c, POOL, "debian", "image", "vm1_sda")
        assert clone.parent == f"{POOL}/debian@image"
        _, chunks = volumes.read_stream(c, POOL, "vm1_sda")
        assert hashlib.sha256(b"".join(chunks)).hexdigest() == hashlib.sha256(data).hexdigest()
    shown = cli.json("image", "info", "debian")
    assert (shown["format"], shown["size"], shown["clones"]) == ("qcow2", len(data), [f"{POOL}/vm1_sda"])
    assert shown["description"] == "the base"
    # with no pool named, the cluster's only RBD pool (other tests of the session may have made more); never
    # one of Ceph's own
    with connect(str(ceph.conf)) as c:
        pools = sorted(storage_pools.finished_pools(c))
        internal = next(p for p in c.list_pools() if p not in pools)
    assert f"pool '{internal}' is not an RBD pool" in refused(
        api, "PUT", f"/images/x?pool={internal}", None, 400, "pool"
    )
    code, body = call(api, "PUT", "/images/again", raw=data)
    if pools == [POOL]:
        assert code == 201 and body["pool"] == POOL, body
    else:
        assert code == 400 and body["field"] == "pool" and f"pools: {', '.join(pools)}" in body["detail"], body
        assert call(api, "PUT", f"/images/again?pool={POOL}", raw=data)[0] == 201
    # a taken name is refused before the body is sent (the CLI asks first)
    assert "already exists" in cli.fails("image", "upload", "debian", str(raw))
    code, err = call(api, "PUT", "/images/debian?pool=" + POOL, raw=data)
    assert code == 409 and "image 'debian' already exists" in err["detail"]
    code, err = call(api, "PUT", "/images/bad:name", raw=b"x" * 512)  # refused from the path, the body unread
    assert code == 400 and err["field"] == "image"
    code, err = call(api, "PUT", "/images/nopool?pool=nosuch", raw=data)
    assert code == 404 and call(api, "GET", "/images/nopool")[0] == 404
    # in use: by a storage template (and its profile), and by the clone
    disk = {"id": "sda", "pool": POOL, "image": "debian", "size": 10 * MiB}
    assert call(api, "POST", "/templates/storage", {"name": "from-debian", "disks": [disk]})[0] == 201
    assert call(api, "POST", "/templates/system", {"name": "i-sys", "vcpus": 1, "memory_mib": 256})[0] == 201
    profile = {"name": "i-prof", "system_template": "i-sys", "storage_template": "from-debian"}
    assert call(api, "POST", "/profiles", profile)[0] == 201
    detail = refused(api, "DELETE", "/images/debian", None, 409)
    assert "storage template from-debian; profile i-prof; the VM disks cloned from it (provpool/vm1_sda)" in detail
    listed = cli.ok("image", "list")
    assert "debian" in listed and "from-debian" in listed
    for path in ("/profiles/i-prof", "/templates/storage/from-debian", "/templates/system/i-sys"):
        assert call(api, "DELETE", path)[0] == 200
    assert "the VM disks cloned from it" in cli.fails("image", "remove", "debian")
    with connect(str(ceph.conf)) as c:
        volumes.remove_volume(c, POOL, "vm1_sda")
    assert cli.ok("image", "remove", "debian").strip() == "removed image debian"
    assert call(api, "DELETE", "/images/again")[0] == 200
    with connect(str(ceph.conf)) as c:
        assert {v.name for v in volumes.list_volumes(c, POOL)}.isdisjoint({"debian", "again", "nopool"})
    assert call(api, "GET", "/images")[1] == []


def test_writes_through_the_api_complete_across_a_switchover(api, patroni):
    made: list[int] = []
    failed: list[tuple[int, object]] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set() or n < 20:
            n += 1
            code, body = call(api, "POST", "/userdata", {"name": f"sw{n}", "body": CLOUD_CONFIG})
            if code == 201:
                made.append(n)
            else:
                failed.append((code, body))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        patroni.switchover()
    finally:
        stop.set()
        thread.join(120)
    assert failed == [] and made
    names = {u["name"] for u in call(api, "GET", "/userdata")[1]}
    assert {f"sw{n}" for n in made} <= names
    for n in made:
        call(api, "DELETE", f"/userdata/sw{n}")
