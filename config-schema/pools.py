"""A Ceph pool's limits and defaults: cluster.toml's [ceph] pools, the API's pool requests and `pvc storage pool`
take these. No pydantic here: the `pvc` command imports it."""

from __future__ import annotations

MIN_COPIES = 1  # size (copies of each object) and min_size (copies needed to accept writes)
MAX_COPIES = 10
MAX_PGS = 32768  # placement groups, a power of two
DEFAULT_SIZE = 3
DEFAULT_MIN_SIZE = 2
DEFAULT_PGS = 32
