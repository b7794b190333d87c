"""/storage: Ceph status, pools, volumes (with upload and download), snapshots and OSDs, one module each.

Status is read from ZooKeeper (the primary keeps it current); everything else asks Ceph through this worker's
librados connection (`ctx.ceph.run`, which turns Ceph's errors into storage errors). Refusals (full pool, last
copies, missing confirmation, a volume in use) answer 409 with the figures; unknown objects 404; bad input 400
naming the field; Ceph unreachable 503.
"""

TAGS = ["storage"]
