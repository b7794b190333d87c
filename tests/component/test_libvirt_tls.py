"""libvirtd between nodes over TLS only, with the nodes' certificates from the cluster CA (formation/libvirt.py):
another node's libvirtd admits exactly the cluster's node certificates, and a migration's stream must be TLS too.

The probes run in node n1's network namespace against n2's cluster IP, as a process on a node (or anything else on
the cluster network) would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from pvc.config import pki
from tests.harness.cluster import CLUSTER, JOIN_KEY, tiny_domain_xml
from tests.harness.procs import wait_until

OTHER_JOIN_KEY = "5eed" * 16

TLS_PROBE = """
import json, socket, ssl, sys
ca, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {}
for spec in sys.argv[4:]:
    name, cert, key = (spec.split(",") + ["", ""])[:3]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)  # the server is checked: only its decision about us is in question
    if cert:
        ctx.load_cert_chain(cert, key)
    try:
        with socket.create_connection((host, port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                byte = tls.recv(1)  # libvirtd confirms an admitted client with one byte, 0x01
                out[name] = "admitted" if byte == b"\\x01" else "closed"
    except (ssl.SSLError, OSError) as exc:
        out[name] = "refused: " + type(exc).__name__
print(json.dumps(out))
"""


def identity(folder: Path, ca_pem: str, cert_pem: str = "", key_pem: str = "") -> Path:
    """A libvirt client PKI folder (virsh's ?pkipath=): cacert.pem, clientcert.pem, clientkey.pem."""
    folder.mkdir(parents=True)
    (folder / "cacert.pem").write_text(ca_pem)
    if cert_pem:
        (folder / "clientcert.pem").write_text(cert_pem)
        (folder / "clientkey.pem").write_text(key_pem)
        (folder / "clientkey.pem").chmod(0o600)
    return folder


def in_node(runtime, node: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", runtime.lab.ns(node), *argv], capture_output=True, text=True, timeout=60
    )


def test_libvirtd_admits_only_the_cluster_node_certificates(runtime, tmp_path):
    cfg, target = runtime.cfg, f"{CLUSTER.prefix}.{runtime.host_id('n2')}"
    ours = pki.node_pki(JOIN_KEY, cfg, cfg.node("n1"))
    foreign = pki.node_pki(OTHER_JOIN_KEY, cfg, cfg.node("n1"))  # the same names, another cluster's CA
    ca_key, ca = pki.cluster_ca(JOIN_KEY, cfg)
    client_key = ec.generate_private_key(pki.CURVE)
    client = pki.client_certificate(ca_key, ca, cfg.cluster.name, "someone", client_key.public_key())
    ids = {
        "node": identity(tmp_path / "node", ours.ca_pem, ours.node.cert_pem, ours.node.key_pem),
        "migration": identity(tmp_path / "migration", ours.ca_pem, ours.migration.cert_pem, ours.migration.key_pem),
        "client": identity(tmp_path / "client", ours.ca_pem, pki.cert_pem(client), pki.key_pem(client_key)),
        "foreign": identity(tmp_path / "foreign", ours.ca_pem, foreign.node.cert_pem, foreign.node.key_pem),
        "none": identity(tmp_path / "none", ours.ca_pem),
    }

    # raw TLS: what libvirtd decides about each client certificate (or none)
    specs = [
        ",".join([name, *((str(d / "clientcert.pem"), str(d / "clientkey.pem")) if name != "none" else ())])
        for name, d in ids.items()
    ]
    out = in_node(
        runtime, "n1", sys.executable, "-c", TLS_PROBE, str(ids["node"] / "cacert.pem"), target, "16514", *specs
    )
    verdicts = json.loads(out.stdout)
    assert verdicts["node"] == "admitted", verdicts
    for name in ("migration", "client", "foreign", "none"):
        assert verdicts[name] != "admitted", verdicts

    # the real client: virsh with each identity
    def virsh(name: str) -> subprocess.CompletedProcess[str]:
        return in_node(runtime, "n1", "virsh", "-c", f"qemu+tls://{target}/system?pkipath={ids[name]}", "hostname")

    admitted = virsh("node")
    assert admitted.returncode == 0 and admitted.stdout.strip() == "n2", admitted.stderr
    for name in ("migration", "client"):  # signed by our CA, but not a node certificate: tls_allowed_dn_list
        refused = virsh(name)
        assert refused.returncode != 0 and "TLS confirmation" in refused.stderr, (name, refused.stderr)
    n2_log = (runtime.libvirt_root("n2") / "log" / "libvirtd.log").read_text()
    assert "not on the list of allowed clients" in n2_log

    # and no plain TCP at all: libvirt's unauthenticated port is closed
    plain = in_node(runtime, "n1", "virsh", "-c", f"qemu+tcp://{target}/system", "hostname")
    assert plain.returncode != 0 and "Connection refused" in plain.stderr, plain.stderr


def test_migration_stream_must_be_tls(runtime):
    """migrate_tls_force: libvirt refuses a migration without VIR_MIGRATE_TLS; with it, the domain moves."""
    src = runtime.libvirt_uri("n1")
    created = subprocess.run(
        ["virsh", "-c", src, "create", "/dev/stdin"],
        input=tiny_domain_xml("plain", runtime.dir / "plain-console.log"),
        capture_output=True,
        text=True,
    )
    assert created.returncode == 0, created.stderr
    dest = f"qemu+tls://{CLUSTER.prefix}.{runtime.host_id('n2')}/system"
    cleartext = subprocess.run(
        ["virsh", "-c", src, "migrate", "--live", "--p2p", "plain", dest], capture_output=True, text=True, timeout=120
    )
    assert cleartext.returncode != 0 and "TLS" in cleartext.stderr, cleartext.stderr
    tls = subprocess.run(
        ["virsh", "-c", src, "migrate", "--live", "--p2p", "--tls", "plain", dest],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tls.returncode == 0, tls.stderr

    def moved() -> bool:
        return (
            "plain"
            in subprocess.run(
                ["virsh", "-c", runtime.libvirt_uri("n2"), "list", "--name"], capture_output=True, text=True
            ).stdout.split()
        )

    wait_until("the domain running on n2", moved, 30)
