"""The cluster's certificate authority, derived from the join key (DESIGN.md decisions 1 and 11).

Every node computes the same CA key and the same CA certificate, byte for byte, and issues its own certificates
with it: no exchange, no leader, nothing stored. Pure functions: join key, config and keys in; certificates and PEM
out. docs/security.md explains what each certificate is for.

Choices, and why:

- **Keys are ECDSA P-256** (a scalar derived with HKDF, secrets.py labels `pki/...`). P-256 is the one algorithm
  every TLS stack PVC uses accepts for certificates and handshakes: OpenSSL (Python's ssl, gunicorn, urllib),
  GnuTLS (libvirt, QEMU's migration TLS) and anything an administrator points at the API. Ed25519 certificates are
  refused by many clients (browsers, older GnuTLS and Java stacks) and RSA keys cannot be derived cheaply.
- **Signatures are deterministic** (RFC 6979). ECDSA normally signs with a random nonce, so two nodes would compute
  different CA certificates from the same key. Here the nonce is derived from the key and the message, as RFC 6979
  specifies, so a certificate depends only on the join key and cluster.toml: the CA's fingerprint is the same on
  every node and formation rewrites nothing at a reboot. Trust never depends on that (a verifier matches the issuer
  by name and checks the signature with the CA's public key, which is the same everywhere); the unit tests check both.
- **Validity is fixed**: from 2024-01-01 to 9999-12-31 (RFC 5280's "no well-defined expiration"). The certificates
  live as long as the join key they derive from; rotation is a new join key (docs/security.md).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from pvc.config.schema import ClusterFile, Node
from pvc.config.secrets import (
    LABEL_PKI_API_KEY,
    LABEL_PKI_CA_KEY,
    LABEL_PKI_MIGRATION_KEY,
    LABEL_PKI_NODE_KEY,
    derive,
)

CURVE = ec.SECP256R1()
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # the order of P-256's base point
NOT_BEFORE = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
ECDSA_SHA256_ALGORITHM = bytes.fromhex("300a06082a8648ce3d040302")  # AlgorithmIdentifier, DER

# Organisational units: what a certificate is for. libvirtd admits only the `node` certificates of the cluster's
# nodes (tls_allowed_dn_list); QEMU's migration stream uses the `migration` ones, whose keys QEMU can read; the API's
# HTTPS server the `api` ones, whose keys the pvc-api user can read.
OU_CA, OU_NODE, OU_MIGRATION, OU_CLIENT, OU_API = "ca", "node", "migration", "client", "api"


# -- keys ------------------------------------------------------------------------------------------------------------
def derive_key(join_key: str, label: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from the join key: 48 HKDF bytes reduced into [1, n-1] (FIPS 186-4 B.4.1)."""
    scalar = int.from_bytes(derive(join_key, label, 48), "big") % (N - 1) + 1
    return ec.derive_private_key(scalar, CURVE)


def ca_key(join_key: str) -> ec.EllipticCurvePrivateKey:
    return derive_key(join_key, LABEL_PKI_CA_KEY)


def node_key(join_key: str, node: str) -> ec.EllipticCurvePrivateKey:
    return derive_key(join_key, LABEL_PKI_NODE_KEY.format(node=node))


def migration_key(join_key: str, node: str) -> ec.EllipticCurvePrivateKey:
    return derive_key(join_key, LABEL_PKI_MIGRATION_KEY.format(node=node))


def api_key(join_key: str, node: str) -> ec.EllipticCurvePrivateKey:
    return derive_key(join_key, LABEL_PKI_API_KEY.format(node=node))


# -- deterministic ECDSA (RFC 6979, P-256 with SHA-256) ---------------------------------------------------------------
def _rfc6979_nonces(d: int, h1: bytes) -> Iterable[int]:
    """RFC 6979 section 3.2: the nonces k for private key `d` and message hash `h1`, in order."""
    x, h = d.to_bytes(32, "big"), (int.from_bytes(h1, "big") % N).to_bytes(32, "big")
    v, k = b"\x01" * 32, b"\x00" * 32
    k = hmac.new(k, v + b"\x00" + x + h, hashlib.sha256).digest()
    v = hmac.new(k, v, hashlib.sha256).digest()
    k = hmac.new(k, v + b"\x01" + x + h, hashlib.sha256).digest()
    v = hmac.new(k, v, hashlib.sha256).digest()
    while True:
        v = hmac.new(k, v, hashlib.sha256).digest()  # qlen = hlen = 256: one block is enough
        candidate = int.from_bytes(v, "big")
        if 1 <= candidate < N:
            yield candidate
        k = hmac.new(k, v + b"\x00", hashlib.sha256).digest()
        v = hmac.new(k, v, hashlib.sha256).digest()


def sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> tuple[int, int]:
    """(r, s): an ECDSA-SHA256 signature whose nonce follows RFC 6979, so the same key and message always give the
    same signature. The point multiplication k·G is OpenSSL's (the public key of the private key k)."""
    d = key.private_numbers().private_value
    h1 = hashlib.sha256(message).digest()
    e = int.from_bytes(h1, "big")
    for k in _rfc6979_nonces(d, h1):
        r = ec.derive_private_key(k, CURVE).public_key().public_numbers().x % N
        s = pow(k, -1, N) * (e + r * d) % N
        if r and s:
            return r, s
    raise AssertionError("unreachable")  # pragma: no cover


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    length = (
        bytes([n])
        if n < 0x80
        else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )
    return bytes([tag]) + length + content


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _signed(builder: x509.CertificateBuilder, issuer_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """The certificate of `builder`, signed deterministically by `issuer_key`."""
    draft = builder.sign(issuer_key, hashes.SHA256())  # only for its to-be-signed part: OpenSSL's nonce is random
    assert draft.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    tbs = draft.tbs_certificate_bytes
    r, s = sign(issuer_key, tbs)
    signature = _der(0x30, _der_int(r) + _der_int(s))
    cert = x509.load_der_x509_certificate(_der(0x30, tbs + ECDSA_SHA256_ALGORITHM + _der(0x03, b"\x00" + signature)))
    issuer_key.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    return cert


def _serial(*parts: bytes) -> int:
    """A positive serial number (< 2^127) fixed by what the certificate certifies."""
    digest = hashlib.sha256(b"pvc/serial\0" + b"\0".join(parts)).digest()
    return int.from_bytes(digest[:16], "big") >> 1 | 1


def _spki(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# -- certificates ------------------------------------------------------------------------------------------------------
def subject(cluster: str, unit: str, name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"PVC cluster {cluster}"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )


def dn(cluster: str, unit: str, name: str) -> str:
    """A subject as libvirt compares it with tls_allowed_dn_list: GnuTLS's string, attributes in certificate order
    ("O=PVC cluster lab,OU=node,CN=node1"; `virt-pki-query-dn` prints the same). No value PVC puts in a subject
    needs escaping: cluster and node names are [a-z0-9-]."""
    return ",".join(f"{a.rfc4514_attribute_name}={a.value!s}" for a in subject(cluster, unit, name))


def _key_usage(ca: bool) -> x509.KeyUsage:
    """A CA signs certificates (and CRLs); an end entity signs handshakes (keyEncipherment: see `issue`)."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def ca_certificate(key: ec.EllipticCurvePrivateKey, cluster: str) -> x509.Certificate:
    """The self-signed CA certificate: the same bytes from the same key and cluster name, on every node."""
    name = subject(cluster, OU_CA, "PVC cluster CA")
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(_serial(b"ca", _spki(public)))
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(ca=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return _signed(builder, key)


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    name: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str] = (),
    server: bool = True,
    client: bool = True,
) -> x509.Certificate:
    """An end-entity certificate for `public_key`, for TLS servers and/or clients, with the given names.

    Key usage is digitalSignature + keyEncipherment, marked critical: libvirt refuses a critical key usage without
    keyEncipherment (and warns when it is missing from a non-critical one), and TLS with ECDSA needs digitalSignature.
    """
    usages = [
        u
        for u, wanted in ((ExtendedKeyUsageOID.SERVER_AUTH, server), (ExtendedKeyUsageOID.CLIENT_AUTH, client))
        if wanted
    ]
    if not usages:
        raise ValueError("a certificate must be for a server, a client or both")
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(dns_names)]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(str(a) for a in ip_addresses)]
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(_serial(name.public_bytes(), _spki(public_key)))
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _signed(builder, ca_key)


def node_names(cfg: ClusterFile, node: Node) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) a node answers to: its name and FQDNs, its upstream, cluster and storage IPs, the
    floating IPs (any coordinator may hold them), and localhost for local clients."""
    net = cfg.network
    cores = [c for c in (net.upstream, net.cluster, net.storage) if c is not None]
    dns = [node.name, f"{node.name}.{cfg.cluster.domain}"]
    dns += [f"{node.name}.{c.domain}" for c in cores if c.domain]
    dns.append("localhost")
    ips = [str(ip) for ip in (node.ip.upstream, node.ip.cluster, node.ip.storage) if ip is not None]
    ips += [str(c.floating_ip) for c in cores]
    ips.append("127.0.0.1")
    return list(dict.fromkeys(dns)), list(dict.fromkeys(ips))


def node_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    cfg: ClusterFile,
    node: Node,
    unit: str,
    key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    """A node's certificate for TLS servers and clients (`unit` OU_NODE, OU_MIGRATION or OU_API)."""
    dns, ips = node_names(cfg, node)
    return issue(ca_key, ca_cert, subject(cfg.cluster.name, unit, node.name), key.public_key(), dns, ips)


def client_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    cluster: str,
    name: str,
    public_key: ec.EllipticCurvePublicKey,
) -> x509.Certificate:
    """A TLS client certificate (OU `client`) for `name`: trusted as a client of the CA, never as a node."""
    return issue(ca_key, ca_cert, subject(cluster, OU_CLIENT, name), public_key, server=False, client=True)


# -- PEM -----------------------------------------------------------------------------------------------------------------
def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """PKCS#8, unencrypted: read by OpenSSL and GnuTLS alike."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate, as `openssl x509 -fingerprint -sha256` prints it."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


@dataclass(frozen=True)
class Issued:
    cert_pem: str
    key_pem: str


@dataclass(frozen=True)
class NodePki:
    """What one node needs: the CA certificate, its node identity (libvirtd's server and client) and its migration
    identity (QEMU's migration stream; the QEMU user can read that key, so it is not trusted by libvirtd)."""

    ca_pem: str
    node: Issued
    migration: Issued


def cluster_ca(join_key: str, cfg: ClusterFile) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ca_key(join_key)
    return key, ca_certificate(key, cfg.cluster.name)


def node_pki(join_key: str, cfg: ClusterFile, node: Node) -> NodePki:
    key, ca = cluster_ca(join_key, cfg)
    nk, mk = node_key(join_key, node.name), migration_key(join_key, node.name)
    return NodePki(
        ca_pem=cert_pem(ca),
        node=Issued(cert_pem(node_certificate(key, ca, cfg, node, OU_NODE, nk)), key_pem(nk)),
        migration=Issued(cert_pem(node_certificate(key, ca, cfg, node, OU_MIGRATION, mk)), key_pem(mk)),
    )


def ca_pem(join_key: str, cfg: ClusterFile) -> str:
    """The cluster CA certificate: what a client of the cluster's TLS services pins (`pvc connection add
    --from-config`)."""
    return cert_pem(cluster_ca(join_key, cfg)[1])


def api_pki(join_key: str, cfg: ClusterFile, node: Node) -> Issued:
    """The certificate and key the API serves HTTPS with on `node`: a server and client identity of its own (OU
    `api`), naming the node, its IPs, the floating IPs, localhost and 127.0.0.1. libvirtd does not admit it."""
    key, ca = cluster_ca(join_key, cfg)
    ak = api_key(join_key, node.name)
    return Issued(cert_pem(node_certificate(key, ca, cfg, node, OU_API, ak)), key_pem(ak))


def node_dns(cfg: ClusterFile) -> list[str]:
    """The subjects of every node's OU_NODE certificate: the only clients libvirtd admits."""
    return [dn(cfg.cluster.name, OU_NODE, n.name) for n in cfg.nodes]
