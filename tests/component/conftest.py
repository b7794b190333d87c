"""Fixtures that start real services for component tests. Every process is ours, ended by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvc.nodeos.state.store import ClusterState, make_client
from tests.harness.ports import API_PORT, CEPH_PORT, NS_PREFIX, PORT_BASE, RUNTIME_ZK_PORT, ZK_PORT
from tests.harness.zookeeper import ZooKeeper


def pytest_collection_modifyitems(items):
    for item in items:
        if "/component/" in str(item.fspath):
            item.add_marker(pytest.mark.component)


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pvc-component-"))
    path.chmod(0o711)  # daemons that drop root (dnsmasq as nobody) reach their files below, as under /run
    yield path
    if os.environ.get("PVC_KEEP_WORKDIR") != "1":
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def zookeeper(workdir) -> Iterator[ZooKeeper]:
    zk = ZooKeeper(workdir / "zk-standalone", "127.0.0.1", ZK_PORT)
    try:
        zk.wait_ready()
        yield zk
    finally:
        zk.stop()


@pytest.fixture
def state(zookeeper) -> Iterator[ClusterState]:
    """A ClusterState on a clean tree of its own (a ZooKeeper chroot), apart from other fixtures' /pvc."""
    from kazoo.client import KazooClient

    root = KazooClient(hosts=zookeeper.hosts, timeout=5)
    root.start(timeout=10)
    root.ensure_path("/state-tests")
    root.stop()
    root.close()
    zk = make_client(zookeeper.hosts + "/state-tests", user="pvc", password="component-test", timeout=5)
    zk.start(timeout=10)
    with contextlib.suppress(Exception):
        zk.delete("/pvc", recursive=True)
    st = ClusterState(zk)
    st.ensure_base()
    try:
        yield st
    finally:
        with contextlib.suppress(Exception):
            zk.delete("/pvc", recursive=True)
        zk.stop()
        zk.close()


@pytest.fixture(scope="session")
def libvirt_cache(workdir) -> Path:
    """QEMU capabilities probed by the first libvirtd, shared by the others (7 s → 0.3 s per start)."""
    path = workdir / "libvirt-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def runtime(workdir, libvirt_cache, request) -> Iterator:
    """Three simulated servers with BMCs, libvirtd and pvcd, around a ZooKeeper. Ends with no VM ever seen
    running on two nodes at once."""
    from tests.harness.cluster import RuntimeCluster

    options = getattr(request, "param", {}) or {}
    # short: unix socket paths (libvirt's, under this folder) are limited to 107 bytes
    cluster = RuntimeCluster(
        Path(tempfile.mkdtemp(prefix="rt", dir=workdir)),
        ["n1", "n2", "n3"],
        prefix=NS_PREFIX,
        zk_host_port=RUNTIME_ZK_PORT,
        **options,
    )
    try:
        cluster.up(libvirt_cache)
        yield cluster
        assert cluster.checker is not None and cluster.checker.samples > 0, "the double-run checker never ran"
        assert cluster.checker.violations == [], "a VM ran on two nodes at once:\n" + "\n".join(
            cluster.checker.violations
        )
    finally:
        cluster.down()


@pytest.fixture
def rbd_runtime(workdir, libvirt_cache, ceph) -> Iterator:
    """The runtime cluster with the session's Ceph plugged into its cluster network: VMs on RBD disks."""
    from tests.harness.cluster import RuntimeCluster

    cluster = RuntimeCluster(
        Path(tempfile.mkdtemp(prefix="rb", dir=workdir)),
        ["n1", "n2", "n3"],
        prefix=NS_PREFIX,
        zk_host_port=RUNTIME_ZK_PORT,
        ceph=ceph,
    )
    try:
        cluster.up(libvirt_cache)
        yield cluster
        assert cluster.checker is not None and cluster.checker.violations == [], "a VM ran on two nodes at once:\n" + (
            "\n".join(cluster.checker.violations if cluster.checker else [])
        )
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def api_cluster(workdir, zookeeper):
    """A formed cluster's state (schema, three registered nodes with keepalives) and the API over it."""
    from pvc.config.secrets import initial_api_key
    from tests.harness.api import ApiServer, seed_formed_cluster
    from tests.harness.cluster import JOIN_KEY, cluster_toml

    d = workdir / "api"
    d.mkdir(exist_ok=True)
    config = d / "cluster.toml"
    config.write_text(cluster_toml(["n1", "n2", "n3"]))
    zk, state = seed_formed_cluster(zookeeper.hosts, JOIN_KEY, ["n1", "n2", "n3"], mem_free=[4096, 3584, 3072])
    try:
        with ApiServer.running(d, config, zookeeper.hosts, API_PORT) as server:
            server.key = initial_api_key(JOIN_KEY)
            server.state = state
            yield server
    finally:
        zk.stop()
        zk.close()


@pytest.fixture(scope="session")
def ceph(workdir):
    """One mon, one mgr, three bluestore OSDs on sparse files; keys derived from the component join key."""
    from tests.harness.ceph import Ceph, CephNet
    from tests.harness.cluster import JOIN_KEY

    net = CephNet(f"ceph-{NS_PREFIX}", PORT_BASE // 10)  # not under NS_PREFIX: a runtime cluster's teardown
    cluster = Ceph(workdir / "ceph", JOIN_KEY, port=CEPH_PORT, net=net)  # deletes those namespaces
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def patroni(workdir, zookeeper):
    """Two Patroni members (PostgreSQL 15) over the session's ZooKeeper, with the provisioner's role, database and
    schema made as formation makes them (pvc.nodeos.formation.provisioner.prepare)."""
    from pvc.config.load import load_text
    from pvc.nodeos.formation.provisioner import prepare
    from pvc.nodeos.provisioner import db
    from tests.harness.cluster import JOIN_KEY, cluster_toml
    from tests.harness.patroni import Patroni
    from tests.harness.ports import PATRONI_PG_PORTS, PATRONI_REST_PORTS

    result = load_text(cluster_toml(["n1", "n2", "n3"]))
    assert result.config is not None
    cfg = result.config
    ports = list(zip(PATRONI_PG_PORTS, PATRONI_REST_PORTS, strict=True))
    with Patroni.running(workdir / "patroni", zookeeper.hosts, JOIN_KEY, cfg, ports) as cluster:
        members = cluster.members_string()
        cluster.prepared = prepare(db.superuser_dsn(cfg, JOIN_KEY, members), db.app_dsn(cfg, JOIN_KEY, members), 60)
        yield cluster


PROVISIONER_VNI = 4001  # the network and pool the provisioner's API tests make
PROVISIONER_POOL = "provpool"


def empty_provisioner_database(patroni) -> None:
    """The provisioner's database, dropped and made again empty (as formation makes it, before migrations)."""
    from pvc.nodeos.provisioner import bootstrap, db
    from tests.harness.cluster import JOIN_KEY

    members = patroni.members_string()
    superuser = db.superuser_dsn(patroni.cfg, JOIN_KEY, members)
    conn = superuser.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS pvc WITH (FORCE)")
    bootstrap.ensure(conn, db.app_dsn(patroni.cfg, JOIN_KEY, members).password)
    conn.close()


@pytest.fixture(scope="module")
def provisioner_api(api_cluster, ceph, patroni, zookeeper, workdir):
    """The API with Patroni, Ceph and ZooKeeper behind it, on an empty provisioner database (it migrates it), with
    the network PROVISIONER_VNI and the pool PROVISIONER_POOL; `.key` and `.state` as api_cluster's."""
    from pvc.nodeos.state.models import NetworkRecord
    from tests.harness.api import ApiServer
    from tests.harness.ports import PROVISIONER_API_PORT

    empty_provisioner_database(patroni)
    env = {"PVC_CEPH_CONF": str(ceph.conf), "PVC_POSTGRES": patroni.members_string()}
    config = workdir / "api" / "cluster.toml"
    with ApiServer.running(workdir / "provisioner-api", config, zookeeper.hosts, PROVISIONER_API_PORT, env=env) as s:
        s.key = api_cluster.key
        s.state = api_cluster.state
        s.state.create_network(NetworkRecord(vni=PROVISIONER_VNI, name="provnet", type="bridged", mtu=1500))
        pool = {"name": PROVISIONER_POOL, "pgs": 8, "size": 2, "min_size": 1}
        code, body = s.call("POST", "/api/v1/storage/pools", pool, s.key)
        assert code == 201, body
        try:
            yield s
        finally:
            s.state.remove_network(PROVISIONER_VNI)
            s.call("DELETE", f"/api/v1/storage/pools/{PROVISIONER_POOL}?confirm={PROVISIONER_POOL}", key=s.key)
