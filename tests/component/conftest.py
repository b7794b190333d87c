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
from tests.component.zookeeper import ZooKeeper

# Unusual ports and names, so component tests can run beside other work on the machine.
ZK_PORT = 21931


def pytest_collection_modifyitems(items):
    for item in items:
        if "/component/" in str(item.fspath):
            item.add_marker(pytest.mark.component)


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pvc-component-"))
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
    """A ClusterState on a clean /pvc tree."""
    zk = make_client(zookeeper.hosts, user="pvc", password="component-test", timeout=5)
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
    from tests.component.cluster import RuntimeCluster

    options = getattr(request, "param", {}) or {}
    # short: unix socket paths (libvirt's, under this folder) are limited to 107 bytes
    cluster = RuntimeCluster(Path(tempfile.mkdtemp(prefix="rt", dir=workdir)), ["n1", "n2", "n3"], **options)
    try:
        cluster.up(libvirt_cache)
        yield cluster
        assert cluster.checker is not None and cluster.checker.samples > 0, "the double-run checker never ran"
        assert cluster.checker.violations == [], "a VM ran on two nodes at once:\n" + "\n".join(
            cluster.checker.violations
        )
    finally:
        cluster.down()
