"""Getting the image onto nodes: the disk installer (`pvc-install`, install.py) and the local lab (`pvc-lab`,
the lab/ package)."""
