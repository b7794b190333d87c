"""Cluster state in ZooKeeper: the key layout (layout.py), the records (models.py), the VM state machine
(vmstate.py) and typed accessors (store.py). The daemon and the API use only this package to touch ZooKeeper.
"""
