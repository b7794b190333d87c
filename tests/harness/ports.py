"""Ports and namespace names of this test run, so that component tests and benches can run beside other work on
the machine. Two runs at once on one machine need different PVC_TEST_PORT_BASE and PVC_TEST_NS_PREFIX."""

from __future__ import annotations

import os
import socket

PORT_BASE = int(os.environ.get("PVC_TEST_PORT_BASE", "21930"))
NS_PREFIX = os.environ.get("PVC_TEST_NS_PREFIX", "pvct")
ZK_PORT = PORT_BASE + 1  # the session's standalone ZooKeeper
RUNTIME_ZK_PORT = PORT_BASE + 2  # a runtime cluster's ZooKeeper, forwarded to loopback
API_PORT = PORT_BASE + 3  # the session's API (api_cluster)
SCHEMATHESIS_API_PORT = PORT_BASE + 4
STORAGE_API_PORT = PORT_BASE + 6  # the API with Ceph behind it
STATE_ZK_PORT = PORT_BASE + 7  # the ZooKeeper that test_state stops and starts
CAPPED_API_PORT = PORT_BASE + 8  # the API with Ceph behind it and a small [ceph] upload_max
BENCH_PORT = PORT_BASE + 20  # benches: from here up
CEPH_PORT = PORT_BASE + 4859  # the session's Ceph mon
BENCH_CEPH_PORT = PORT_BASE + 4869


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
