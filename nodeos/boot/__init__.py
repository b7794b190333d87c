"""What a node does at boot: find its cluster.toml, find itself in it, prepare PVCDATA, run the formation graph."""
