"""Formation renderers: pure functions of cluster.toml and the node, checked by the real tool where one exists."""

from __future__ import annotations

import base64
import dataclasses
import grp
import os
import subprocess

import pytest
import yaml

from pvc.config.pki import node_pki
from pvc.config.secrets import patroni_rest_password
from pvc.nodeos.formation import ceph, frr, libvirt, machinery, network, patroni, plan, system, units
from pvc.nodeos.formation.machinery import Context, write
from tests.harness.examples import EXAMPLES, example_cluster


def cfg_of(name: str):
    return example_cluster(name)


def test_network_files_for_the_lab():
    cfg = cfg_of("lab-3node")
    node = cfg.node("node2")
    files = network.render(cfg, node)
    assert set(files) == {"30-pvc-eth0.network", "30-pvc-eth1.network", "30-pvc-eth2.network"}
    eth0 = files["30-pvc-eth0.network"]
    assert "Address=192.0.2.12/24" in eth0 and "Gateway=192.0.2.254" in eth0
    assert "Address=198.51.100.12/24" in files["30-pvc-eth1.network"]
    assert network.addresses(cfg, node) == {
        "eth0": ["192.0.2.12/24"],
        "eth1": ["198.51.100.12/24"],
        "eth2": ["203.0.113.12/24"],
    }


def test_network_files_with_bonds_and_vlans():
    cfg = cfg_of("production-5node")
    node = cfg.nodes[0]
    files = network.render(cfg, node)
    netdevs = {k: v for k, v in files.items() if k.endswith(".netdev")}
    kinds = {v.split("Kind=")[1].split()[0] for v in netdevs.values()}
    assert kinds <= {"bond", "vlan"} and netdevs, files.keys()
    for bond in cfg.network.bonds:
        for member in bond.members:
            assert f"Bond={bond.name}" in files[f"30-pvc-{member}.network"]
    for vlan in cfg.network.vlans:
        assert f"VLAN={vlan.name}" in files[f"30-pvc-{vlan.parent}.network"]
        assert f"Id={vlan.id}" in files[f"20-pvc-{vlan.name}.netdev"]


def test_frr_peers_every_other_node_and_the_routers():
    cfg = cfg_of("production-3node")
    node = cfg.nodes[0]
    conf = frr.render_conf(cfg, node)
    assert f"router bgp {cfg.bgp.asn}" in conf
    for other in cfg.nodes[1:]:
        assert f"neighbor {other.ip.cluster} remote-as {cfg.bgp.asn}" in conf
        assert f"neighbor {other.ip.cluster} peer-group fabric" in conf
    for router in cfg.bgp.routers:
        assert f"neighbor {router.address} remote-as" in conf
        assert f"neighbor {router.address} peer-group upstream" in conf
    assert f"neighbor {node.ip.cluster} " not in conf
    # EVPN among the nodes only; the upstream routers get the connected routes the prefix-list lets through
    evpn = conf.split("address-family l2vpn evpn")[1].split("exit-address-family")[0]
    assert evpn.split() == ["neighbor", "fabric", "activate", "advertise-all-vni"]
    assert "redistribute connected route-map pvc-announce" in conf
    # what the primary sends the other nodes is NO_EXPORT, so only the primary announces a subnet to the routers
    ipv4 = conf.split("address-family ipv4 unicast")[1].split("exit-address-family")[0]
    assert "neighbor fabric route-map pvc-fabric-out out" in ipv4 and "neighbor fabric send-community" in ipv4
    assert "route-map pvc-fabric-out permit 10\n set community no-export additive\nexit" in conf
    assert "neighbor upstream route-map" not in conf  # the routers get the primary's subnets unchanged


def test_frr_conf_passes_vtysh_dry_run(tmp_path):
    cfg = cfg_of("lab-3node")
    path = tmp_path / "frr.conf"
    path.write_text(frr.render_conf(cfg, cfg.nodes[0]))
    out = subprocess.run(["vtysh", "--dryrun", "--inputfile", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_patroni_config(tmp_path):
    cfg = cfg_of("lab-3node")
    node = cfg.node("node1")
    doc = yaml.safe_load(patroni.render(cfg, node, "ab" * 32))
    assert doc["scope"] == "lab" and doc["name"] == "node1"
    assert doc["zookeeper"]["hosts"] == ["198.51.100.11:2181", "198.51.100.12:2181", "198.51.100.13:2181"]
    assert doc["bootstrap"]["dcs"]["ttl"] == cfg.patroni.ttl
    assert doc["restapi"]["listen"] == "198.51.100.11:8008"
    assert "host replication replicator 198.51.100.0/24 scram-sha-256" in doc["postgresql"]["pg_hba"]
    assert doc["postgresql"]["basebackup"] == [{"checkpoint": "fast"}]  # a replica does not wait for a spread one
    passwords = {v["password"] for v in doc["postgresql"]["authentication"].values()}
    assert len(passwords) == 3 and all(len(p) >= 20 for p in passwords)
    rest = doc["restapi"]["authentication"]  # basic auth on Patroni's unsafe endpoints, derived from the join key
    assert rest == {"username": "pvc", "password": patroni_rest_password("ab" * 32)}
    assert rest["password"] not in passwords and rest["password"] != patroni_rest_password("cd" * 32)
    header = patroni.rest_auth_header("ab" * 32)["Authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")).decode() == f"pvc:{rest['password']}"


def test_units_quote_arguments():
    text = units.render(
        "x", ["/opt/pvc/bin/gunicorn", "-c", "python:pvc.api.gunicorn", "pvc.api:create_app()"], env={"A": "b c"}
    )
    assert "ExecStart=/opt/pvc/bin/gunicorn -c python:pvc.api.gunicorn pvc.api:create_app()" in text
    assert 'Environment="A=b c"' in text
    assert units._quote(["echo", "50% of $HOME"]) == 'echo "50%% of $$HOME"'


def test_units_pass_systemd_analyze_verify(tmp_path):
    from pvc.nodeos.formation import daemons

    for name, text in {
        "pvc-api.service": daemons.api_unit("/run/pvc/cluster.toml", "node1", tls=True),
        "pvc-pvcd.service": daemons.pvcd_unit("/run/pvc/cluster.toml", "node1", 30),
    }.items():
        path = tmp_path / name
        path.write_text(text.replace("/opt/pvc/bin/", "/bin/true #"))
        out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True)
        assert "Invalid" not in out.stderr and "Unknown" not in out.stderr, out.stderr


def test_the_api_unit_runs_its_workers_unprivileged_in_a_sandbox_with_the_issued_certificate():
    from pvc.nodeos.formation import daemons

    text = daemons.api_unit("/run/pvc/cluster.toml", "node1", tls=True)
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "PrivateDevices=yes",
                 "CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_CHOWN"):  # fmt: skip
        assert line in text.splitlines(), line
    for env in ('PVC_API_USER=pvc-api"', 'PVC_NODE=node1"', 'PVC_API_TLS_CERT=/etc/pvc/api/tls-cert.pem"'):
        assert env in text, env
    assert "PVC_API_TLS" not in daemons.api_unit("/run/pvc/cluster.toml", "node1", tls=False)


def test_the_api_files_are_its_certificate_and_a_ceph_client_of_its_own():
    from pvc.config.secrets import cluster_secrets
    from pvc.nodeos.formation import daemons

    cfg = cfg_of("lab-3node")
    secrets = cluster_secrets(cfg.cluster.join_key, [n.name for n in cfg.coordinators])
    files = {f.path.name: f for f in daemons.api_files(cfg, cfg.nodes[0], cfg.cluster.join_key, secrets, None)}
    assert sorted(files) == ["ceph.client.admin.keyring", "ceph.conf", "tls-cert.pem", "tls-key.pem"]
    assert files["tls-key.pem"].mode == files["ceph.client.admin.keyring"].mode == 0o640
    assert "OU=api" not in files["tls-cert.pem"].text and "BEGIN CERTIFICATE" in files["tls-cert.pem"].text
    conf = files["ceph.conf"].text
    assert "keyring = /etc/pvc/api/$cluster.$name.keyring" in conf and "log to file = false" in conf
    assert secrets.ceph_keys["client.admin"] in files["ceph.client.admin.keyring"].text
    own = daemons.api_files(cfg, cfg.nodes[0], cfg.cluster.join_key, secrets, ("CERT", "KEY"))
    assert [(f.path.name, f.text) for f in own[:2]] == [("tls-cert.pem", "CERT"), ("tls-key.pem", "KEY")]
    plain = cfg.model_copy(update={"api": cfg.api.model_copy(update={"insecure_http": True})})
    assert [f.path.name for f in daemons.api_files(plain, cfg.nodes[0], cfg.cluster.join_key, secrets, None)] == [
        "ceph.conf",
        "ceph.client.admin.keyring",
    ]


def test_pvcd_runs_under_the_watchdog():
    from pvc.nodeos.formation import daemons

    text = daemons.pvcd_unit("/run/pvc/cluster.toml", "node1", 45)
    assert "WatchdogSec=45" in text.splitlines() and "NotifyAccess=main" in text.splitlines()
    assert "WatchdogSec" not in daemons.api_unit("/run/pvc/cluster.toml", "node1", tls=True)


def test_hosts_file_names_every_node():
    cfg = cfg_of("lab-3node")
    hosts = system.render_hosts(cfg)
    assert "198.51.100.12 node2.lab.lab.invalid node2" in hosts


def test_write_gives_the_new_file_its_mode_and_group_before_its_contents(tmp_path, monkeypatch):
    """No window in which a keyring is readable by others (review L3), and a random temporary name."""
    seen = []
    real = os.fdopen

    def spy(fd, *args, **kwargs):
        st = os.fstat(fd)
        seen.append((st.st_mode & 0o777, st.st_gid, st.st_size))
        return real(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", spy)
    path = tmp_path / "keyring"
    daemon = grp.getgrnam("daemon").gr_gid
    assert write(path, "secret\n", 0o640, group="daemon") is True
    assert seen == [(0o640, daemon, 0)]
    assert (path.stat().st_mode & 0o777, path.stat().st_gid, path.read_text()) == (0o640, daemon, "secret\n")
    assert [p.name for p in tmp_path.iterdir()] == ["keyring"]  # no temporary file left
    os.chown(path, 0, 0)
    path.chmod(0o644)
    assert write(path, "secret\n", 0o640, group="daemon") is False  # same text: mode and group put right in place
    assert (path.stat().st_mode & 0o777, path.stat().st_gid) == (0o640, daemon)
    with pytest.raises(machinery.StepFailed, match="no group 'no-such-group'"):
        write(path, "x", group="no-such-group")


def test_write_is_idempotent(tmp_path):
    path = tmp_path / "a" / "b.conf"
    assert write(path, "x\n") is True
    assert write(path, "x\n") is False
    assert write(path, "y\n") is True


def test_steps_per_role():
    cfg = cfg_of("production-5node")
    names = {}
    for node in cfg.nodes:
        ctx = Context(cfg=cfg, node=node, config_path=EXAMPLES, join_key="", secrets=None)  # type: ignore[arg-type]  # listing the steps reads no secrets
        names[node.name] = [s.name for s in plan.steps_for(ctx)]
    coord = next(n for n in cfg.nodes if n.coordinator)
    hyper = next(n for n in cfg.nodes if not n.coordinator)
    assert names[coord.name][:5] == ["data", "system", "network", "firewall", "zookeeper"]
    assert names[coord.name][-1] == "api"
    assert "zookeeper" not in names[hyper.name] and "ceph-mon" not in names[hyper.name]
    assert "zookeeper-client" in names[hyper.name] and names[hyper.name][-1] == "pvcd"


def test_the_plan_starts_exactly_the_services_config_show_lists():
    from pvc.config.resolve import SERVICES, services

    step_service = {"libvirt": "libvirtd", "api": "pvc-api"}  # step names that differ from the service's
    for name in ("production-5node", "lab-3node"):
        cfg = cfg_of(name)
        for node in cfg.nodes:
            ctx = Context(cfg=cfg, node=node, config_path=EXAMPLES, join_key="", secrets=None)  # type: ignore[arg-type]  # listing the steps reads no secrets
            started = [step_service.get(s.name, s.name) for s in plan.steps_for(ctx)]
            assert [s for s in started if s in SERVICES] == services(cfg, node), node.name
            assert ("ceph-pools" in started) == node.coordinator  # the monitors' nodes create the pools


def test_libvirt_leaves_cgroups_alone_only_in_a_container():
    cfg = cfg_of("lab-3node")
    p = libvirt.params_for(cfg, cfg.nodes[0], libvirt.host_uuid("b55546b4-ced0-4e34-a267-f228b5982707", "node1"))
    assert "cgroup_controllers" not in libvirt.render_qemu_conf(p)
    assert 'migration_address = "198.51.100.11"' in libvirt.render_qemu_conf(p)
    assert "cgroup_controllers = [ ]" in libvirt.render_qemu_conf(dataclasses.replace(p, cgroups=False))
    assert libvirt.host_uuid("b55546b4-ced0-4e34-a267-f228b5982707", "node1") != libvirt.host_uuid(
        "b55546b4-ced0-4e34-a267-f228b5982707", "node2"
    )


def test_libvirtd_listens_on_tls_only_and_admits_the_nodes():
    cfg = cfg_of("lab-3node")
    p = libvirt.params_for(cfg, cfg.node("node2"), "b55546b4-ced0-4e34-a267-f228b5982707")
    conf = dict(line.split(" = ", 1) for line in libvirt.render_libvirtd_conf(p).splitlines() if " = " in line)
    assert conf["listen_tcp"] == "0" and conf["listen_tls"] == "1" and "auth_tcp" not in conf
    assert conf["listen_addr"] == '"198.51.100.12"' and conf["tls_port"] == '"16514"' and conf["auth_tls"] == '"none"'
    assert conf["tls_no_verify_certificate"] == "0"
    assert conf["tls_allowed_dn_list"] == (
        '["O=PVC cluster lab,OU=node,CN=node1", "O=PVC cluster lab,OU=node,CN=node2", "O=PVC cluster lab,OU=node,CN=node3"]'
    )
    assert conf["cert_file"] == '"/etc/pki/libvirt/servercert.pem"'
    qemu = libvirt.render_qemu_conf(p)
    for line in ("migration_port_min = 49152", "migration_port_max = 49215", "migrate_tls_force = 1"):
        assert line in qemu
    assert 'migrate_tls_x509_cert_dir = "/etc/pki/qemu"' in qemu and "migrate_tls_x509_verify = 1" in qemu
    with pytest.raises(ValueError, match="allowed_dns"):
        libvirt.render_libvirtd_conf(dataclasses.replace(p, allowed_dns=()))


def test_libvirt_tls_files():
    cfg = cfg_of("lab-3node")
    bundle = node_pki("ab" * 32, cfg, cfg.node("node1"))
    files = {f.path: f for f in libvirt.render_pki(bundle)}
    assert files["CA/cacert.pem"].text == files["qemu/ca-cert.pem"].text == bundle.ca_pem
    for path in ("libvirt/servercert.pem", "libvirt/clientcert.pem"):
        assert files[path].text == bundle.node.cert_pem and files[path].mode == 0o644
    for path in ("libvirt/private/serverkey.pem", "libvirt/private/clientkey.pem"):
        assert files[path].text == bundle.node.key_pem and (files[path].mode, files[path].group) == (0o600, "root")
    for end in ("server", "client"):  # QEMU's: the migration identity, its key readable by QEMU's group only
        assert files[f"qemu/{end}-cert.pem"].text == bundle.migration.cert_pem
        key = files[f"qemu/{end}-key.pem"]
        assert key.text == bundle.migration.key_pem and (key.mode, key.group) == (0o640, "libvirt-qemu")
    assert bundle.node.key_pem != bundle.migration.key_pem


def test_ceph_daemons_drop_to_the_ceph_user_and_bind_the_firewalls_ports():
    assert ceph.daemon_argv("osd", "/etc/ceph/ceph.conf", "3") == [
        "ceph-osd", "-f", "-c", "/etc/ceph/ceph.conf", "-i", "3", "--setuser", "ceph", "--setgroup", "ceph"
    ]  # fmt: skip
    conf = ceph.render_conf(ceph.CephParams(fsid="f", mons=[("a", "10.0.0.1")], public_network="10.0.0.0/24"))
    assert "ms bind port min = 6800" in conf and "ms bind port max = 7300" in conf


def test_gratuitous_arp_frame():
    from pvc.nodeos.netif import garp_frame

    frame = garp_frame(bytes.fromhex("525400000001"), "192.0.2.250")
    assert len(frame) == 42 and frame[:6] == b"\xff" * 6 and frame[12:14] == b"\x08\x06"
    assert frame[20:22] == b"\x00\x01"  # request
    assert frame[28:32] == frame[38:42] == bytes([192, 0, 2, 250])  # sender = target: an announcement


def test_sudo_only_for_the_users_cluster_toml_allows_and_visudo_accepts_the_rule(tmp_path):
    from pvc.config.schema import User

    key = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5vdEFSZWFsS2V5UmVwbGFjZU1lUGxlYXNlMTIz a@b"]
    ops = User(name="ops", ssh_keys=key, sudo=True)
    viewer = User(name="viewer", ssh_keys=key)
    (tmp_path / "pvc-gone").write_text("gone ALL=(ALL:ALL) NOPASSWD: ALL\n")  # a user who lost sudo
    (tmp_path / "local").write_text("# not PVC's\n")
    assert system.sudo_users([ops, viewer], tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local", "pvc-ops"]
    rule = tmp_path / "pvc-ops"
    assert rule.stat().st_mode & 0o777 == 0o440 and "ops ALL=(ALL:ALL) NOPASSWD: ALL" in rule.read_text()
    out = subprocess.run(["visudo", "-c", "-f", str(rule)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_ssh_host_key_is_kept_on_pvcdata_and_put_back_at_the_next_boot(tmp_path):
    kept, etc = tmp_path / "pvcdata" / "ssh", tmp_path / "etc"
    etc.mkdir()
    key = etc / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)  # sshd's, at boot
    first = (etc / "ssh_host_ed25519_key.pub").read_text()
    assert system.keep_host_key(kept, key) == "saved on PVCDATA"
    assert kept.stat().st_mode & 0o777 == 0o700 and (kept / key.name).stat().st_mode & 0o777 == 0o600
    for f in etc.iterdir():  # a reboot: a fresh root, and sshd made a new key
        f.unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert (etc / "ssh_host_ed25519_key.pub").read_text() != first
    assert system.keep_host_key(kept, key) == "restored from PVCDATA"
    assert (etc / "ssh_host_ed25519_key.pub").read_text() == first and key.stat().st_mode & 0o777 == 0o600
    assert system.keep_host_key(kept, key) == "kept"


def test_logs_are_bounded_in_every_rendered_config(tmp_path):
    """Ceph's daemons log to the journal, not to files in RAM (Ceph itself reads the rendered file); clients stay
    quiet; ZooKeeper snapshots by size; PostgreSQL's slots keep a bounded WAL; libvirtd logs to the journal."""
    from pvc.config.secrets import cluster_secrets
    from pvc.nodeos.formation import ceph, libvirt, zookeeper

    cfg = cfg_of("lab-3node")
    conf = tmp_path / "ceph.conf"
    conf.write_text(ceph.render_conf(ceph.params_for(cfg, cluster_secrets("ab" * 32, ["node1", "node2", "node3"]))))

    def value(name: str, option: str) -> str:
        argv = ["ceph-conf", "-c", str(conf), "--name", name, "--show-config-value", option]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()

    for daemon in ("mon.node1", "mgr.node1", "osd.0"):
        assert (value(daemon, "log_to_file"), value(daemon, "log_to_stderr")) == ("false", "true"), daemon
    assert value("mon.node1", "mon_cluster_log_to_file") == "false"
    assert value("mon.node1", "mon_cluster_log_to_stderr") == "true"
    assert (value("client.admin", "log_to_file"), value("client.admin", "log_to_stderr")) == ("false", "false")
    zoo = zookeeper.render_cfg(zookeeper.params_for(cfg, cfg.node("node1"), "/var/lib/zookeeper"))
    assert "snapSizeLimitInKb=65536" in zoo and "autopurge.purgeInterval=1" in zoo
    doc = yaml.safe_load(patroni.render(cfg, cfg.node("node1"), "ab" * 32))
    assert doc["postgresql"]["parameters"]["max_slot_wal_keep_size"] == "1GB"
    libvirtd = libvirt.render_libvirtd_conf(libvirt.params_for(cfg, cfg.node("node1"), "u"))
    assert 'log_outputs = "3:journald"' in libvirtd
