"""The join key at boot (review H4): a config fetched over https with a pinned certificate and a digest, the join key
from a separate source (a PVCCONFIG filesystem or a pinned https URL), a config with an inline key over plain http
refused, and the key's hex never in anything the node prints."""

from __future__ import annotations

import hashlib
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvc.nodeos.boot import discover, identity, startup
from tests.harness.examples import example
from tests.harness.http_stub import Stub, self_signed, serve, tls_context

MAC = "52:54:00:5c:00:01"  # node1 of lab-1node
JOIN_KEY = "7" * 64


def config_text(join: str) -> bytes:
    """lab-1node with the join key inline (`join` = "inline") or named as join.key."""
    text = example("lab-1node").read_text()
    line = next(li for li in text.splitlines() if li.startswith("join_key = "))
    new = f'join_key = "{JOIN_KEY}"' if join == "inline" else 'join_key_file = "join.key"'
    return text.replace(line, new).encode()


@pytest.fixture
def servers(tmp_path) -> Iterator[dict]:
    """An http and a self-signed https server, each serving the configs and the key file."""
    routes = {
        ("GET", "/inline.toml"): (200, config_text("inline")),
        ("GET", "/file.toml"): (200, config_text("file")),
        ("GET", "/join.key"): (200, (JOIN_KEY + "\n").encode()),
    }
    cert, key = self_signed(tmp_path / "tls", ["127.0.0.1"])
    plain, plain_url = serve(Stub(dict(routes)))
    tls, tls_url = serve(Stub(dict(routes)), tls_context(cert, key))
    pin = hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()
    yield {"http": plain_url, "https": tls_url, "pin": pin}
    for server in (plain, tls):
        server.shutdown()
        server.server_close()


@pytest.fixture
def boot(tmp_path, monkeypatch, capsys):
    """`startup.attempt` as a boot runs it, staging into tmp_path; returns a function of the kernel arguments that
    also checks that the join key never reached the output."""
    monkeypatch.setattr(discover, "STAGE", tmp_path / "run" / "pvc")
    monkeypatch.setattr(discover, "label_device", lambda: None)
    monkeypatch.setattr(identity, "owned_macs", lambda: [MAC])

    def attempt(**args: str) -> startup.Booted | discover.Unavailable:
        try:
            result: startup.Booted | discover.Unavailable = startup.attempt(args)
        except discover.Unavailable as exc:
            result = exc
        out = capsys.readouterr()
        assert JOIN_KEY not in out.out + out.err + str(result) + repr(result)
        return result

    return attempt


def test_a_pinned_https_config_with_its_digest(servers, boot):
    url = f"{servers['https']}/inline.toml"
    digest = hashlib.sha256(config_text("inline")).hexdigest()
    booted = boot(config=url, config_pin=servers["pin"], config_sha256=digest)
    assert isinstance(booted, startup.Booted) and booted.join_key == JOIN_KEY and booted.node.name == "node1"
    colons = ":".join(servers["pin"][i : i + 2] for i in range(0, 64, 2)).upper()
    assert isinstance(boot(config=url, config_pin=colons), startup.Booted)  # as openssl prints it


def test_a_wrong_pin_or_digest_is_refused_naming_what_was_found(servers, boot):
    url = f"{servers['https']}/inline.toml"
    wrong = "ab" * 32
    err = boot(config=url, config_pin=wrong)
    assert isinstance(err, discover.Unavailable)
    assert f"fingerprint {servers['pin']}, not the pinned {wrong}" in str(err)
    err = boot(config=url, config_pin=servers["pin"], config_sha256=wrong)
    assert isinstance(err, discover.Unavailable) and f"not the {wrong} pvc.config_sha256 names" in str(err)
    err = boot(config=url)  # a self-signed server without a pin: the system's CAs do not know it
    assert isinstance(err, discover.Unavailable) and "certificate verify failed" in str(err)
    err = boot(config=url, config_pin="not-hex")
    assert isinstance(err, discover.Unavailable) and "is not a SHA-256 fingerprint" in str(err)


def test_an_inline_join_key_over_plain_http_is_refused_saying_what_to_do(servers, boot):
    err = boot(config=f"{servers['http']}/inline.toml")
    assert isinstance(err, discover.Unavailable)
    message = str(err)
    assert "came over plain http with the join key inline" in message
    assert "pvc.config_pin=" in message and "PVCCONFIG" in message and "pvc.join_key=https://" in message


def test_the_join_key_from_a_pinned_https_url_beside_a_plain_http_config(servers, boot, tmp_path):
    booted = boot(
        config=f"{servers['http']}/file.toml", join_key=f"{servers['https']}/join.key", join_key_pin=servers["pin"]
    )
    assert isinstance(booted, startup.Booted) and booted.join_key == JOIN_KEY
    staged = tmp_path / "run" / "pvc" / "join.key"
    assert staged.stat().st_mode & 0o777 == 0o600


def test_the_join_key_never_comes_over_plain_http(servers, boot):
    err = boot(config=f"{servers['http']}/file.toml", join_key=f"{servers['http']}/join.key")
    assert isinstance(err, discover.Unavailable) and "must not cross the network in clear" in str(err)


def test_a_url_config_naming_a_key_file_says_where_to_put_it(servers, boot):
    err = boot(config=f"{servers['http']}/file.toml")
    assert isinstance(err, discover.Unavailable)
    assert "join_key_file 'join.key', which a URL cannot bring" in str(err) and "PVCCONFIG" in str(err)


def test_the_join_key_from_a_pvcconfig_stick_holding_only_the_key(servers, boot, tmp_path, monkeypatch):
    content = tmp_path / "stick"
    content.mkdir()
    (content / "join.key").write_text(JOIN_KEY + "\n")
    stick = tmp_path / "stick.img"
    subprocess.run(["mkfs.ext4", "-q", "-L", "PVCCONFIG", "-d", str(content), str(stick), "8M"], check=True)
    monkeypatch.setattr(discover, "label_device", lambda: stick)
    booted = boot(config=f"{servers['http']}/file.toml")
    assert isinstance(booted, startup.Booted) and booted.join_key == JOIN_KEY
    assert not list(Path("/run").glob("pvcconfig.*"))  # unmounted and cleaned up
    (content / "join.key").unlink()
    (content / "other").write_text("x")
    stick.unlink()
    subprocess.run(["mkfs.ext4", "-q", "-L", "PVCCONFIG", "-d", str(content), str(stick), "8M"], check=True)
    err = boot(config=f"{servers['http']}/file.toml")
    assert isinstance(err, discover.Unavailable) and "holds no join.key" in str(err)


def test_booted_and_the_formation_context_never_show_the_key(boot, servers):
    from pvc.nodeos.formation.machinery import Context

    booted = boot(config=f"{servers['https']}/inline.toml", config_pin=servers["pin"])
    assert isinstance(booted, startup.Booted)
    ctx = Context(cfg=booted.cfg, node=booted.node, config_path=booted.path, join_key=booted.join_key, secrets=None)  # type: ignore[arg-type]
    assert JOIN_KEY not in repr(ctx) and JOIN_KEY not in str(ctx)
