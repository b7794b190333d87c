"""cluster.toml: its schema, loading with file:line:key errors, cross-field checks and derived secrets.

Kept import-free so that `pvc --help` stays fast; import the submodules you need.
"""
