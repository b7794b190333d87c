"""Service harnesses and helpers shared by every test tier and by bench/: real ZooKeeper, Ceph, libvirtd, the API
under gunicorn, simulated servers with BMCs in network namespaces, the `pvc` and `pvc-lab` drivers, and the
process helpers that start and end them. Test folders hold only conftest.py and test_*.py."""
