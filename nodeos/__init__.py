"""Everything that runs on a node: config discovery, formation, cluster state, the node daemon."""
