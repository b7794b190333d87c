"""The `pvc` command line."""
