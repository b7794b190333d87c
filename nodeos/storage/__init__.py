"""Ceph storage through the rados/rbd bindings: pools, volumes (RBD images), snapshots, usage."""
