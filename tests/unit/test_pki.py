"""The cluster CA derived from the join key: deterministic, verified by OpenSSL and GnuTLS, names as documented, and
trusted by what it signs whatever the bytes of the CA certificate a verifier holds."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from pvc.config import pki
from pvc.config.load import load
from tests.harness.examples import example

KEY_A = "ab" * 32
KEY_B = "cd" * 32


@pytest.fixture(scope="module")
def lab():
    return load(example("lab-3node")).config


def files(tmp_path: Path, **pems: str) -> dict[str, str]:
    out = {}
    for name, text in pems.items():
        (tmp_path / f"{name}.pem").write_text(text)
        out[name] = str(tmp_path / f"{name}.pem")
    return out


def openssl_verify(ca: str, cert: str, purpose: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", "-CAfile", ca, "-purpose", purpose, cert], capture_output=True, text=True
    )


def certtool_verify(ca: str, cert: str) -> subprocess.CompletedProcess[str]:
    """GnuTLS's verification (libvirt and QEMU use GnuTLS)."""
    return subprocess.run(
        ["certtool", "--verify", "--load-ca-certificate", ca, "--infile", cert], capture_output=True, text=True
    )


def test_rfc6979_test_vectors():
    """RFC 6979 appendix A.2.5 (P-256, SHA-256): the nonce derivation is the standard one."""
    key = ec.derive_private_key(0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721, pki.CURVE)
    assert pki.sign(key, b"sample") == (
        0xEFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716,
        0xF7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8,
    )
    assert pki.sign(key, b"test") == (
        0xF1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367,
        0x019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083,
    )


def test_ca_is_the_same_bytes_in_every_process_and_differs_per_join_key(lab):
    code = (
        "from pvc.config import pki; from pvc.config.load import load; from tests.harness.examples import example; "
        "cfg = load(example('lab-3node')).config; p = pki.node_pki('" + KEY_A + "', cfg, cfg.nodes[1]); "
        "print(p.ca_pem + p.node.cert_pem + p.migration.cert_pem)"
    )
    root = Path(__file__).resolve().parents[2]
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout
        for _ in range(2)
    }
    assert len(outs) == 1
    mine = pki.node_pki(KEY_A, lab, lab.nodes[1])
    assert outs == {mine.ca_pem + mine.node.cert_pem + mine.migration.cert_pem + "\n"}
    other = pki.node_pki(KEY_B, lab, lab.nodes[1])
    assert other.ca_pem != mine.ca_pem and other.node.key_pem != mine.node.key_pem
    # every label is its own key
    keys = {
        pki.ca_key(KEY_A),
        pki.node_key(KEY_A, "node1"),
        pki.node_key(KEY_A, "node2"),
        pki.migration_key(KEY_A, "node1"),
    }
    assert len({k.private_numbers().private_value for k in keys}) == 4


def test_chain_verifies_with_openssl_and_gnutls(lab, tmp_path):
    p = pki.node_pki(KEY_A, lab, lab.nodes[0])
    f = files(tmp_path, ca=p.ca_pem, node=p.node.cert_pem, migration=p.migration.cert_pem)
    for cert in (f["node"], f["migration"]):
        for purpose in ("sslserver", "sslclient"):
            out = openssl_verify(f["ca"], cert, purpose)
            assert out.returncode == 0 and ": OK" in out.stdout, out.stdout + out.stderr
        gnutls = certtool_verify(f["ca"], cert)
        assert gnutls.returncode == 0 and "Chain verification output: Verified" in gnutls.stdout, gnutls.stdout
    ca = x509.load_pem_x509_certificate(p.ca_pem.encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.issuer == ca.subject and ca.not_valid_after.year == 9999


def test_node_certificate_names(lab):
    node = lab.node("node2")
    cert = x509.load_pem_x509_certificate(pki.node_pki(KEY_A, lab, node).node.cert_pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node2", "node2.lab.lab.invalid", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [
        "192.0.2.12",  # upstream
        "198.51.100.12",  # cluster
        "203.0.113.12",  # storage
        "192.0.2.250",  # the floating IPs: upstream (the API), cluster, storage
        "198.51.100.250",
        "203.0.113.250",
        "127.0.0.1",
    ]
    assert cert.subject.rfc4514_string() == "CN=node2,OU=node,O=PVC cluster lab"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_encipherment
    assert pki.node_dns(lab) == [f"O=PVC cluster lab,OU=node,CN=node{i}" for i in (1, 2, 3)]


def test_a_client_certificate_is_only_for_clients(lab, tmp_path):
    key, ca = pki.cluster_ca(KEY_A, lab)
    client_key = ec.generate_private_key(pki.CURVE)
    cert = pki.client_certificate(key, ca, lab.cluster.name, "monitoring", client_key.public_key())
    f = files(tmp_path, ca=pki.cert_pem(ca), client=pki.cert_pem(cert))
    assert openssl_verify(f["ca"], f["client"], "sslclient").returncode == 0
    assert openssl_verify(f["ca"], f["client"], "sslserver").returncode != 0
    assert pki.dn(lab.cluster.name, pki.OU_CLIENT, "monitoring") not in pki.node_dns(lab)
    with pytest.raises(ValueError, match="server, a client or both"):
        pki.issue(key, ca, cert.subject, client_key.public_key(), server=False, client=False)


def test_trust_does_not_depend_on_the_ca_certificate_bytes(lab, tmp_path):
    """A verifier holding a CA certificate with other bytes (here: the same key and contents, self-signed with a
    random ECDSA nonce, as a node without RFC 6979 would compute it) trusts the same node certificates."""
    key, ca = pki.cluster_ca(KEY_A, lab)
    builder = (
        x509.CertificateBuilder()
        .subject_name(ca.subject)
        .issuer_name(ca.issuer)
        .public_key(ca.public_key())
        .serial_number(ca.serial_number)
        .not_valid_before(ca.not_valid_before)
        .not_valid_after(ca.not_valid_after)
    )
    for ext in ca.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    twin = builder.sign(key, hashes.SHA256())
    assert twin.public_bytes(serialization.Encoding.DER) != ca.public_bytes(serialization.Encoding.DER)
    node = pki.node_pki(KEY_A, lab, lab.nodes[2]).node.cert_pem
    f = files(tmp_path, twin=pki.cert_pem(twin), node=node)
    assert openssl_verify(f["twin"], f["node"], "sslserver").returncode == 0
    assert certtool_verify(f["twin"], f["node"]).returncode == 0


def test_another_clusters_ca_is_not_trusted(lab, tmp_path):
    node = pki.node_pki(KEY_A, lab, lab.nodes[0]).node.cert_pem
    f = files(tmp_path, other=pki.node_pki(KEY_B, lab, lab.nodes[0]).ca_pem, node=node)
    out = openssl_verify(f["other"], f["node"], "sslserver")
    assert out.returncode != 0 and "unable to get local issuer certificate" in out.stdout + out.stderr
    assert certtool_verify(f["other"], f["node"]).returncode != 0


def test_mutual_tls_between_two_nodes_with_python_ssl(lab, tmp_path):
    """OpenSSL (Python's ssl, as gunicorn and urllib use it): node1 serves, node2 connects by IP and presents its
    certificate; each trusts the CA it computed itself."""
    n1, n2 = pki.node_pki(KEY_A, lab, lab.node("node1")), pki.node_pki(KEY_A, lab, lab.node("node2"))
    f = files(tmp_path, ca=n1.ca_pem, c1=n1.node.cert_pem, k1=n1.node.key_pem, c2=n2.node.cert_pem, k2=n2.node.key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(f["c1"], f["k1"])
    server_ctx.load_verify_locations(f["ca"])
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            peer = tls.getpeercert()
            assert peer is not None
            seen["peer"] = peer["subject"]
            tls.sendall(b"hello")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=f["ca"])
    client_ctx.load_cert_chain(f["c2"], f["k2"])
    with (
        socket.create_connection(listener.getsockname(), timeout=5) as raw,
        client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,  # checked against the IP SANs
    ):
        assert tls.recv(5) == b"hello"
        assert tls.version() in ("TLSv1.3", "TLSv1.2")
    thread.join(5)
    listener.close()
    assert (("commonName", "node2"),) in seen["peer"]  # type: ignore[operator]


def test_the_api_certificate_is_its_own_identity_naming_the_node_the_floating_ips_and_loopback(lab, tmp_path):
    node = lab.node("node2")
    issued = pki.api_pki(KEY_A, lab, node)
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    assert cert.subject.rfc4514_string() == "CN=node2,OU=api,O=PVC cluster lab"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert {"127.0.0.1", "192.0.2.12", "198.51.100.12", "192.0.2.250", "198.51.100.250"} <= ips
    assert {"node2", "localhost"} <= set(sans.get_values_for_type(x509.DNSName))
    assert issued.key_pem != pki.node_pki(KEY_A, lab, node).node.key_pem  # not the key libvirtd trusts
    assert pki.dn(lab.cluster.name, pki.OU_API, "node2") not in pki.node_dns(lab)
    paths = files(tmp_path, ca=pki.ca_pem(KEY_A, lab), cert=issued.cert_pem)
    assert openssl_verify(paths["ca"], paths["cert"], "sslserver").returncode == 0
    assert pki.api_pki(KEY_A, lab, node) == issued  # deterministic: a reboot rewrites nothing
