"""Client networks on a node: their devices (links), the primary's dnsmasq per managed network and its lease hook,
the networks' nftables (ACLs, NAT, what VMs may reach on the node) and the BGP announcements of managed subnets.
pvcd's network controller (pvc.nodeos.daemon.networks) drives them; docs/networks.md describes the whole."""
