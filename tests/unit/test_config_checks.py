"""Every cross-field check of cluster.toml, each with its own test, by editing a valid example."""

from __future__ import annotations

import pytest

from pvc.config.load import Problem, load_text


def edit(text: str, old: str, new: str, count: int = 1) -> str:
    assert text.count(old) >= count, f"example no longer contains {old!r}"
    return text.replace(old, new, count)


def problems(text: str, severity: str = "error") -> list[Problem]:
    return [p for p in load_text(text, "c.toml").problems if p.severity == severity]


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    start = -1
    for _ in range(occurrence):
        start = text.index(needle, start + 1)
    return text.count("\n", 0, start) + 1


@pytest.fixture
def p3(example_text):
    return example_text("production-3node")


@pytest.fixture
def p5(example_text):
    return example_text("production-5node")


def only_error(text: str) -> Problem:
    errs = problems(text)
    assert len(errs) == 1, [e.format("c.toml") for e in errs]
    return errs[0]


def test_examples_are_valid(example_text):
    for name in ("production-3node", "production-5node", "lab-3node", "lab-1node", "lab-vm-1node", "lab-vm-3node"):
        result = load_text(example_text(name), name)
        assert result.valid, [p.format(name) for p in result.errors]


def test_duplicate_cluster_ip_is_one_line_naming_both_nodes_at_the_second(p3):
    text = edit(p3, 'cluster = "10.0.0.2"', 'cluster = "10.0.0.1"')
    err = only_error(text)
    assert err.key == "nodes[1].ip.cluster"
    assert err.line == line_of(text, 'cluster = "10.0.0.1"', occurrence=2)
    assert "'hv1'" in err.message and "'hv2'" in err.message
    first = line_of(text, 'cluster = "10.0.0.1"')
    assert f"line {first}" in err.message


def test_duplicate_node_name(p3):
    err = only_error(edit(p3, 'name = "hv3"', 'name = "hv1"'))
    assert err.key == "nodes[2].name" and "node name" in err.message and "nodes[0].name" in err.message


def test_duplicate_node_id(p3):
    err = only_error(edit(p3, "id = 3", "id = 2"))
    assert err.key == "nodes[2].id" and "'hv3'" in err.message and "'hv2'" in err.message


def test_duplicate_mac(p3):
    err = only_error(edit(p3, "d8:d3:85:00:00:03", "d8:d3:85:00:00:01"))
    assert err.key == "nodes[2].macs[0]" and "'hv1'" in err.message


def test_duplicate_ipmi_address(p3):
    err = only_error(edit(p3, "10.100.0.103", "10.100.0.101"))
    assert err.key == "nodes[2].ipmi.address"


def test_duplicate_explicit_router_id(p3):
    text = edit(p3, 'ip = { upstream = "10.100.0.3"', 'router_id = "10.0.0.1"\nip = { upstream = "10.100.0.3"')
    err = only_error(text)
    assert err.key == "nodes[2].router_id" and "'hv1'" in err.message and "'hv3'" in err.message


def test_node_ip_outside_subnet(p3):
    err = only_error(edit(p3, 'cluster = "10.0.0.3"', 'cluster = "10.0.9.3"'))
    assert err.key == "nodes[2].ip.cluster" and "outside the cluster subnet 10.0.0.0/24" in err.message


def test_node_ip_is_broadcast_address(p3):
    err = only_error(edit(p3, 'cluster = "10.0.0.3"', 'cluster = "10.0.0.255"'))
    assert "broadcast address" in err.message


def test_floating_ip_outside_subnet(p3):
    err = only_error(edit(p3, 'floating_ip = "10.0.0.254"', 'floating_ip = "10.0.5.254"'))
    assert err.key == "network.cluster.floating_ip" and "outside" in err.message


def test_gateway_outside_subnet(p3):
    err = only_error(edit(p3, 'gateway = "10.100.0.254"', 'gateway = "10.101.0.254"'))
    assert err.key == "network.upstream.gateway"


def test_floating_ip_equal_to_a_node_ip_is_reported_at_the_later_key(p3):
    text = edit(p3, 'floating_ip = "10.0.0.254"', 'floating_ip = "10.0.0.2"')
    err = only_error(text)
    # [network.cluster] comes before [[nodes]] in this file, so the node's key is the later one
    assert err.key == "nodes[1].ip.cluster"
    assert "network.cluster.floating_ip" in err.message and "'hv2'" in err.message


def test_upstream_requires_gateway(p3):
    err = only_error(edit(p3, 'gateway = "10.100.0.254"\n', ""))
    assert err.key == "network.upstream.gateway" and "required key 'gateway' is missing" in err.message


def test_overlapping_core_networks(p5):
    err = only_error(edit(p5, 'subnet = "10.0.1.0/24"', 'subnet = "10.0.0.0/23"'))
    assert "overlaps" in err.message and "cluster network" in err.message


def test_client_network_overlapping_core_network(p5):
    text = edit(p5, 'subnet = "10.200.0.0/24"', 'subnet = "10.0.0.0/16"')
    errs = problems(text)
    assert any("overlaps" in e.message and e.key == "client_networks[1].subnet" for e in errs)


@pytest.mark.parametrize("count", [2, 4])
def test_even_number_of_coordinators_is_an_error(p5, count):
    text = p5
    # production-5node has 3 coordinators; flip hypervisors / coordinators to reach `count`
    if count == 2:
        text = edit(text, "coordinator = true", "coordinator = false")
    else:
        text = edit(text, "coordinator = false", "coordinator = true")
    err = only_error(text)
    assert f"{count} coordinators" in err.message and "odd" in err.message
    assert err.key.endswith(".coordinator")


def test_single_coordinator_is_a_lab_warning(example_text):
    result = load_text(example_text("lab-1node"))
    assert result.valid
    assert any("only one coordinator" in w.message and "lab" in w.message for w in result.warnings)


def test_no_coordinator_is_an_error(p3):
    text = p3.replace("coordinator = true", "coordinator = false")
    err = only_error(text.replace("enabled = true", "enabled = true"))
    assert err.key == "nodes" and "coordinator" in err.message


def test_coordinator_needs_storage_ip(p5):
    text = edit(p5, ', storage = "10.0.1.2" }', " }")
    err = only_error(text)
    assert err.key == "nodes[1].ip" and "'hv2'" in err.message and "ip.storage" in err.message


def test_coordinator_needs_cluster_ip(p3):
    text = edit(p3, 'ip = { upstream = "10.100.0.2", cluster = "10.0.0.2" }', 'ip = { upstream = "10.100.0.2" }')
    err = only_error(text)
    assert err.key == "nodes[1].ip" and "ip.cluster" in err.message


def test_storage_ip_without_storage_network(p3):
    err = only_error(edit(p3, 'cluster = "10.0.0.1" }', 'cluster = "10.0.0.1", storage = "10.0.1.1" }'))
    assert err.key == "nodes[0].ip.storage" and "[network.storage]" in err.message


def test_duplicate_vlan_id_on_one_parent(p5):
    err = only_error(edit(p5, "id = 1002", "id = 1001"))
    assert err.key == "network.vlans[2].id" and "vlan1001" in err.message


@pytest.mark.parametrize("vid", [0, 4095])
def test_vlan_id_out_of_range(p5, vid):
    err = only_error(edit(p5, "id = 1002", f"id = {vid}"))
    assert err.key == "network.vlans[2].id" and "out of range" in err.message


def test_bridged_client_vlan_clashes_with_physical_vlan(p5):
    err = only_error(edit(p5, "vlan = 2000", "vlan = 1001"))
    assert err.key == "client_networks[0].vlan" and "vlan1001" in err.message


def test_duplicate_vni(p5):
    text = (
        p5
        + '\n[[client_networks]]\nname = "dmz"\ntype = "managed"\nvni = 10100\nsubnet = "10.201.0.0/24"\ngateway = "10.201.0.1"\n'
    )
    err = only_error(text)
    assert err.key == "client_networks[2].vni" and "'internal'" in err.message


def test_vni_out_of_range(p5):
    err = only_error(edit(p5, "vni = 10100", "vni = 16777216"))
    assert err.key == "client_networks[1].vni"


def test_vlan_mtu_larger_than_parent(p5):
    text = edit(
        p5,
        'name = "bond0"\nmembers = ["ens1f0", "ens1f1"]\nmode = "802.3ad"\nlacp_rate = "fast"\nmtu = 9000',
        'name = "bond0"\nmembers = ["ens1f0", "ens1f1"]\nmode = "802.3ad"\nlacp_rate = "fast"\nmtu = 1500',
    )
    errs = problems(text)
    assert any(e.key == "network.vlans[1].mtu" and "parent 'bond0' MTU 1500" in e.message for e in errs)


def test_bond_member_must_exist(p5):
    err = only_error(edit(p5, 'members = ["ens1f0", "ens1f1"]', 'members = ["ens1f0", "ens9f9"]'))
    assert err.key == "network.bonds[0].members[1]" and "ens9f9" in err.message


def test_bond_member_used_twice(p5):
    text = edit(
        p5,
        "[[network.vlans]]",
        '[[network.bonds]]\nname = "bond1"\nmembers = ["ens1f1"]\nmtu = 9000\n\n[[network.vlans]]',
    )
    err = only_error(text)
    assert err.key == "network.bonds[1].members[0]" and "bond 'bond0'" in err.message


def test_lacp_rate_needs_8023ad(p5):
    err = only_error(edit(p5, 'mode = "802.3ad"', 'mode = "active-backup"'))
    assert err.key == "network.bonds[0]" and "lacp_rate" in err.message


@pytest.mark.parametrize("asn", [0, 23456, 65535, 4294967295])
def test_asn_out_of_range(p3, asn):
    err = only_error(edit(p3, "asn = 65500", f"asn = {asn}"))
    assert err.key == "bgp.asn" and str(asn) in err.message


def test_pool_size_larger_than_nodes_with_osds(p3):
    text = p3.replace('osds = [{ model = "SAMSUNG MZQL23T8HCLS*", count = 2 }]\n', "", 2)
    errs = problems(text)
    assert any(e.key == "ceph.pools[0].name" and "only 1 node(s) have OSDs (hv3)" in e.message for e in errs)


def test_pool_min_size_must_be_below_size(p5):
    err = only_error(edit(p5, "size = 2\nmin_size = 1", "size = 2\nmin_size = 2"))
    assert err.key == "ceph.pools[1].min_size" and "less than size 2" in err.message


def test_pool_defaults_min_size_must_be_below_size(p3):
    err = only_error(edit(p3, "size = 3, min_size = 2", "size = 3, min_size = 3"))
    assert err.key == "ceph.pool_defaults.min_size"


def test_fencing_without_ipmi_names_the_node(p3):
    text = edit(p3, 'ipmi = { address = "10.100.0.102", username = "pvcfence", password = "example-change-me" }\n', "")
    err = only_error(text)
    assert err.key == "nodes[1]" and "'hv2'" in err.message and "fencing" in err.message
    assert load_text(edit(text, "enabled = true", "enabled = false")).valid


def test_patroni_ttl_outside_zookeeper_session_limits(p3):
    err = only_error(p3 + "\n[zookeeper]\ntick_time_ms = 500\n")  # 1-10 s sessions; default ttl 20 s
    assert err.key == "patroni.ttl" and "1-10s" in err.message


def test_patroni_ttl_below_loop_wait_and_retries(p3):
    err = only_error(p3 + "\n[patroni]\nttl = 10\n")
    assert "loop_wait + 2 × retry_timeout = 15s" in err.message


def test_zookeeper_session_timeout_within_tick_limits(p3):
    err = only_error(p3 + "\n[zookeeper]\nsession_timeout_ms = 30000\n")
    assert err.key == "zookeeper.session_timeout_ms" and "2000-20000 ms" in err.message


def test_dhcp_range_outside_subnet_and_gateway_inside_range(p5):
    err = only_error(edit(p5, 'end = "10.200.0.199"', 'end = "10.200.1.10"'))
    assert err.key == "client_networks[1].dhcp.end"
    err = only_error(edit(p5, 'gateway = "10.200.0.1"', 'gateway = "10.200.0.150"'))
    assert err.key == "client_networks[1].dhcp" and "inside the DHCP range" in err.message


def test_osd_selector_equal_to_data_disk(p3):
    text = edit(
        p3,
        'osds = [{ model = "SAMSUNG MZQL23T8HCLS*", count = 2 }]',
        'osds = [{ model = "INTEL SSDSC2KB240G8*" }]',
    )
    err = only_error(text)
    assert err.key == "nodes[0].osds[0]" and "same disk" in err.message


def test_network_device_must_be_declared(p3):
    err = only_error(edit(p3, 'device = "ens1f0"', 'device = "ens9"'))
    assert err.key == "network.cluster.device" and "ens9" in err.message


def test_network_mtu_larger_than_device(p3):
    err = only_error(edit(p3, "mtu = 1500\n\n[network.cluster]", "mtu = 9000\n\n[network.cluster]"))
    assert err.key == "network.upstream.mtu"


def test_bgp_router_that_is_a_node_ip(p3):
    err = only_error(edit(p3, 'address = "10.100.0.254"', 'address = "10.100.0.2"'))
    assert err.key == "bgp.routers[0].address"


def test_duplicate_pool_name(p5):
    err = only_error(edit(p5, 'name = "scratch"', 'name = "vms"'))
    assert err.key == "ceph.pools[1].name"


# -- API keys, HTTPS, published join keys (issue 11) -------------------------------------------------------------------


def test_api_keys_warn_without_a_role_and_names_are_unique(p5):
    text = edit(p5, "[api]\nport = 7370", "[api]\nport = 7370\ninsecure_http = true")
    warnings = problems(text, "warning")
    assert any(w.key == "api.insecure_http" and "in clear" in w.message for w in warnings)
    text = edit(p5, 'role = "read-only", sha256', "sha256")
    warning = next(w for w in problems(text, "warning") if w.key == "api.keys[0]")
    assert "names no role, so it gets 'read-only'" in warning.message
    dup = edit(p5, "keys = [\n", 'keys = [\n    { name = "monitoring", role = "admin", key = "' + "k" * 32 + '" },\n')
    err = only_error(dup)
    assert err.key == "api.keys[1].name" and "API key name" in err.message


@pytest.mark.parametrize(
    "entry,needle",
    [
        ('{ name = "short", key = "' + "s" * 31 + '" }', "at least 32 characters"),
        ('{ name = "initial", key = "' + "s" * 32 + '" }', "pvc cluster key revoke initial"),
        ('{ name = "boss", role = "root", key = "' + "s" * 32 + '" }', "'read-only', 'operator' or 'admin'"),
    ],
)
def test_api_key_entries_are_refused_with_a_reason(p3, entry, needle):
    err = only_error(p3 + f"\n[api]\nkeys = [{entry}]\n")
    assert needle in err.message, err.message


def test_insecure_http_takes_no_certificate(p3):
    err = only_error(p3 + '\n[api]\ninsecure_http = true\ntls_cert_file = "c.pem"\ntls_key_file = "k.pem"\n')
    assert "takes no 'tls_cert_file'" in err.message


def test_a_published_join_key_is_refused_outside_the_lab(p3, example_text):
    from pvc.config.checks import PUBLISHED_JOIN_KEYS

    for key in PUBLISHED_JOIN_KEYS:
        err = only_error(edit(p3, 'join_key_file = "join.key"', f'join_key = "{key}"'))
        assert err.key == "cluster.join_key" and "published in" in err.message and "pvc config init" in err.message
    for name in ("lab-1node", "lab-3node", "lab-vm-1node", "lab-vm-3node"):  # the lab's own networks: allowed
        assert problems(example_text(name)) == []


def test_every_join_key_in_the_examples_is_known_as_published(example_text):
    from pvc.config.checks import PUBLISHED_JOIN_KEYS

    for name in ("lab-1node", "lab-3node", "lab-vm-1node", "lab-vm-3node"):
        key = example_text(name).split('join_key = "')[1].split('"')[0]
        assert key in PUBLISHED_JOIN_KEYS, name


def test_a_published_join_key_in_a_key_file_is_refused_too(tmp_path, example_text):
    from pvc.config.checks import PUBLISHED_JOIN_KEYS
    from pvc.config.load import load
    from pvc.config.secrets import read_join_key

    (tmp_path / "cluster.toml").write_text(example_text("production-3node"))
    (tmp_path / "join.key").write_text(next(iter(PUBLISHED_JOIN_KEYS)) + "\n")
    cfg = load(tmp_path / "cluster.toml").config
    assert cfg is not None
    with pytest.raises(ValueError, match=r"published in examples/production-3node\.toml") as caught:
        read_join_key(cfg, tmp_path)
    assert next(iter(PUBLISHED_JOIN_KEYS)) not in str(caught.value)
    (tmp_path / "join.key").write_text("5" * 64 + "\n")
    assert read_join_key(cfg, tmp_path) == "5" * 64


def test_users_may_be_given_sudo(p3):
    assert problems(edit(p3, 'name = "admin"\n', 'name = "admin"\nsudo = true\n')) == []


def test_the_api_listens_on_the_node_addresses_and_the_floating_ips(p5):
    from pvc.config.load import load_text
    from pvc.config.resolve import api_addresses

    cfg = load_text(p5, "c.toml").config
    assert cfg is not None
    assert api_addresses(cfg, cfg.nodes[0]) == ["127.0.0.1", "10.100.0.1", "10.0.0.1", "10.100.0.250", "10.0.0.250"]


def test_fencing_on_failure_migrate_is_a_warning(p3):
    result = load_text(edit(p3, 'on_failure = "none"', 'on_failure = "migrate"'), "c.toml")
    assert result.valid
    warning = next(w for w in result.warnings if w.key == "fencing.on_failure")
    assert "runs twice" in warning.message


def test_watchdog_must_cover_three_keepalives(p3):
    assert "[timers]" not in p3, "the example has a [timers] table now: edit it instead"
    err = only_error(p3 + "\n[timers]\nkeepalive_interval = 5\nwatchdog = 10\n")
    assert err.key == "timers" and "3 × keepalive_interval (15s)" in err.message, err.message
