"""The provisioner's data on the cluster's PostgreSQL (Patroni): images, system/network/storage templates, userdata
documents, profiles, OVAs and what each VM was made from (docs/provisioner.md).

`db` connects to the Patroni leader and retries a transaction across a failover; `bootstrap` creates the role and
database (formation); `migrate` applies the numbered SQL files of `migrations/`; `models` are the objects as the API
takes and answers them; `store` reads and writes them; `images` makes and removes base images on RBD.
"""
