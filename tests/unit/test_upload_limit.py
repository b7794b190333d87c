"""The limit of a volume upload: the smallest of the pool's room, [ceph] upload_max and the spool's room."""

from __future__ import annotations

from pvc.nodeos.state.models import PoolRecord
from pvc.nodeos.storage.upload import limit

GiB = 1024**3


def pool(stored: int, capacity: int) -> PoolRecord:
    return PoolRecord(
        name="vms", id=1, size=3, min_size=2, pgs=32, stored_bytes=stored, capacity_bytes=capacity,
        used_percent=100.0 * stored / capacity, objects=1,
    )  # fmt: skip


def test_the_pool_room_under_the_guard_or_all_of_it_when_forced():
    lim = limit(pool(30 * GiB, 100 * GiB), force=False, upload_max=None)
    assert lim.bytes == 50 * GiB and lim.why == "the room left in pool 'vms' under the 80% guard"
    lim = limit(pool(30 * GiB, 100 * GiB), force=True, upload_max=None)
    assert lim.bytes == 70 * GiB and lim.why == "the room left in pool 'vms' under its capacity (forced)"
    assert limit(pool(90 * GiB, 100 * GiB), force=False, upload_max=None).bytes == 0  # over the guard: nothing


def test_the_configured_cap_and_the_spool_lower_it():
    lim = limit(pool(0, 100 * GiB), force=False, upload_max=10 * GiB, spool_room=20 * GiB)
    assert lim.bytes == 10 * GiB and lim.why == "[ceph] upload_max in cluster.toml"
    lim = limit(pool(0, 100 * GiB), force=True, upload_max=10 * GiB, spool_room=GiB)
    assert lim.bytes == GiB and lim.why.startswith("the upload spool's free space")
