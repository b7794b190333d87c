"""`pvc connection add|list|remove|default` and how a command chooses its connection, through the real `pvc`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pvc.cli.profiles import Connection, build_url, check_url, mask
from pvc.config.pki import ca_pem
from pvc.config.secrets import initial_api_key
from tests.harness.examples import example, example_cluster, example_join_key
from tests.harness.http_stub import closed_port

PVC = Path(sys.executable).parent / "pvc"
KEY = "s3cret-key-0123456789abcdef"


def pvc(
    client_dir: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PVC_CLIENT_DIR": str(client_dir), **(env or {})}
    if "PVC_CONNECTION" not in (env or {}):
        full.pop("PVC_CONNECTION", None)
    res = subprocess.run([str(PVC), *args], capture_output=True, text=True, env=full, input=stdin, timeout=30)
    assert "Traceback" not in res.stdout + res.stderr
    return res


def ok(client_dir: Path, *args: str) -> str:
    res = pvc(client_dir, *args)
    assert res.returncode == 0, res.stderr
    return res.stdout


def stored(client_dir: Path) -> dict:
    return json.loads((client_dir / "connections.json").read_text())


def test_add_writes_a_private_file_and_the_first_becomes_default(tmp_path):
    d = tmp_path / "pvc"
    out = ok(d, "connection", "add", "lab", "--address", "10.0.0.5", "--key", KEY, "--description", "the lab")
    assert out.strip() == f"added connection 'lab': https://10.0.0.5:7370 (default) to {d / 'connections.json'}"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "connections.json").stat().st_mode) == 0o600
    ok(d, "connection", "add", "prod", "--address", "pvc.example.com", "--port", "8443", "--no-tls", "--key", KEY)
    doc = stored(d)
    assert doc["default"] == "lab"
    assert doc["connections"]["lab"] == {
        "url": "https://10.0.0.5:7370",
        "key": KEY,
        "verify": True,
        "ca_file": None,
        "ca_pem": None,
        "proxy": False,
        "description": "the lab",
    }
    assert doc["connections"]["prod"]["url"] == "http://pvc.example.com:8443"


def test_add_refuses_to_overwrite_without_replace(tmp_path):
    ok(tmp_path, "connection", "add", "lab", "--address", "10.0.0.5", "--key", KEY)
    res = pvc(tmp_path, "connection", "add", "lab", "--address", "10.0.0.6")
    assert res.returncode == 1 and res.stderr == "pvc: connection 'lab' exists: pass --replace to replace it\n"
    ok(tmp_path, "connection", "add", "lab", "--address", "10.0.0.6", "--key", KEY, "--replace")
    assert stored(tmp_path)["connections"]["lab"]["url"] == "https://10.0.0.6:7370"


def test_key_file_ca_file_insecure_and_ipv6(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked until used\n")
    d = tmp_path / "c"
    ok(d, "connection", "add", "v6", "--address", "fd00::1", "--tls", "--key-file", str(key_file), "--ca-file", str(ca))
    ok(d, "connection", "add", "lax", "--address", "10.0.0.1", "--tls", "--insecure")
    doc = stored(d)["connections"]
    assert doc["v6"]["url"] == "https://[fd00::1]:7370" and doc["v6"]["key"] == KEY
    assert doc["v6"]["ca_file"] == str(ca.resolve())
    assert doc["lax"]["verify"] is False and doc["lax"]["key"] == ""
    res = pvc(d, "connection", "add", "piped", "--address", "10.0.0.2", "--key-file", "-", stdin=f"  {KEY}\n")
    assert res.returncode == 0 and stored(d)["connections"]["piped"]["key"] == KEY


def test_add_usage_errors_exit_2(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    cases = [
        (["--address", "a", "--key", "k", "--key-file", str(key_file)], "give the key with --key or --key-file"),
        (["--key", "k"], "--address is required"),
        (["--address", "ftp://host"], "the scheme must be http or https"),
        (["--address", "https://host:8443", "--port", "1"], "--address is a URL"),
    ]
    for extra, needle in cases:
        res = pvc(tmp_path, "connection", "add", "x", *extra)
        assert res.returncode == 2 and needle in res.stderr, (extra, res.stderr)
    res = pvc(tmp_path, "connection", "add", "bad/name", "--address", "a")
    assert res.returncode == 2 and "a connection name is 1-64 letters" in res.stderr
    empty = tmp_path / "empty"
    empty.write_text("\n")
    res = pvc(tmp_path, "connection", "add", "x", "--address", "a", "--key-file", str(empty))
    assert res.returncode == 1 and res.stderr == f"pvc: the key file {empty} is empty\n"


def test_from_config_derives_address_port_ca_and_initial_key(tmp_path):
    path = example("lab-3node")
    out = ok(tmp_path, "connection", "add", "lab", "--from-config", str(path))
    assert "cluster CA pinned" in out
    doc = stored(tmp_path)["connections"]["lab"]
    cfg, join_key = example_cluster("lab-3node"), example_join_key("lab-3node")
    assert doc["url"] == "https://192.0.2.250:7370"  # the upstream floating IP, HTTPS: the API's default
    assert doc["key"] == initial_api_key(join_key)
    assert doc["ca_pem"] == ca_pem(join_key, cfg) and doc["verify"] is True
    ok(tmp_path, "connection", "add", "local", "--from-config", str(path), "--address", "127.0.0.1", "--port", "9")
    assert stored(tmp_path)["connections"]["local"]["url"] == "https://127.0.0.1:9"
    plain = tmp_path / "plain.toml"
    plain.write_text(path.read_text().replace("[timers]", "[api]\ninsecure_http = true\n\n[timers]"))
    out = ok(tmp_path, "connection", "add", "plain", "--from-config", str(plain))
    assert "plain http: the key crosses the network in clear" in out
    assert stored(tmp_path)["connections"]["plain"]["url"] == "http://192.0.2.250:7370"
    assert stored(tmp_path)["connections"]["plain"]["ca_pem"] is None
    broken = tmp_path / "broken.toml"
    broken.write_text("schema = 1\n")
    res = pvc(tmp_path, "connection", "add", "x", "--from-config", str(broken))
    assert res.returncode == 1 and res.stderr.startswith(f"pvc: {broken} is not a valid cluster.toml: {broken}:")


def test_list_masks_keys_unless_asked(tmp_path):
    ok(tmp_path, "connection", "add", "lab", "--address", "10.0.0.5", "--key", KEY, "--description", "lab rack")
    ok(tmp_path, "connection", "add", "prod", "--address", "10.1.0.5", "--no-tls")
    lines = ok(tmp_path, "connection", "list").splitlines()
    assert lines[0].split() == ["NAME", "URL", "KEY", "TLS", "VERIFY", "DESCRIPTION"]
    assert lines[1].split() == ["*", "lab", "https://10.0.0.5:7370", "****cdef", "system", "cas", "lab", "rack"]
    assert lines[2].split() == ["prod", "http://10.1.0.5:7370", "-", "-"]
    assert KEY not in "\n".join(lines)
    doc = json.loads(ok(tmp_path, "connection", "list", "--format", "json"))
    assert [c["key"] for c in doc] == ["****cdef", "-"]
    doc = json.loads(ok(tmp_path, "connection", "list", "--format", "json", "--show-keys"))
    assert doc[0] == {
        "name": "lab",
        "default": True,
        "url": "https://10.0.0.5:7370",
        "key": KEY,
        "verify": True,
        "ca_file": None,
        "ca_pinned": False,
        "description": "lab rack",
    }
    assert "key: s3cret-key-0123456789abcdef" in ok(tmp_path, "connection", "list", "--format", "yaml", "--show-keys")


def test_remove_and_default(tmp_path):
    ok(tmp_path, "connection", "add", "a", "--address", "10.0.0.1")
    ok(tmp_path, "connection", "add", "b", "--address", "10.0.0.2")
    assert ok(tmp_path, "connection", "default", "b").strip() == "default connection: 'b'"
    assert stored(tmp_path)["default"] == "b"
    out = ok(tmp_path, "connection", "remove", "b")
    assert (
        out.strip() == "removed connection 'b' (it was the default: choose another with `pvc connection default NAME`)"
    )
    assert stored(tmp_path) == {"default": None, "connections": {"a": stored(tmp_path)["connections"]["a"]}}
    res = pvc(tmp_path, "connection", "remove", "b")
    assert res.returncode == 1 and res.stderr == "pvc: no connection named 'b'\n"


def test_selection_order_flag_then_environment_then_default(tmp_path):
    ports = {name: closed_port() for name in ("a", "b", "c")}
    for name, port in ports.items():
        ok(tmp_path, "connection", "add", name, "--address", "127.0.0.1", "--port", str(port), "--no-tls", "--key", KEY)

    def chosen(*args: str, env: dict[str, str] | None = None) -> int:
        res = pvc(tmp_path, *args, "cluster", "status", env=env)
        assert res.returncode == 1 and res.stderr.endswith(": connection refused\n"), res.stderr
        return int(res.stderr.split("http://127.0.0.1:")[1].split(":")[0])

    assert chosen() == ports["a"]  # the first added is the default
    assert chosen(env={"PVC_CONNECTION": "b"}) == ports["b"]
    assert chosen("-c", "c", env={"PVC_CONNECTION": "b"}) == ports["c"]
    assert chosen("--connection", "c") == ports["c"]


def test_clear_messages_when_there_is_no_connection(tmp_path):
    res = pvc(tmp_path, "vm", "list")
    assert res.returncode == 1
    assert res.stderr == "pvc: no connection: add one with `pvc connection add NAME --address ADDRESS --key KEY`\n"
    ok(tmp_path, "connection", "add", "a", "--address", "10.0.0.1")
    res = pvc(tmp_path, "-c", "nope", "vm", "list")
    assert res.stderr == "pvc: no connection named 'nope' (from -c/--connection); known connections: a\n"
    res = pvc(tmp_path, "vm", "list", env={"PVC_CONNECTION": "nope"})
    assert res.stderr == "pvc: no connection named 'nope' (from PVC_CONNECTION); known connections: a\n"
    ok(tmp_path, "connection", "add", "b", "--address", "10.0.0.2")
    ok(tmp_path, "connection", "remove", "a")
    res = pvc(tmp_path, "vm", "list")
    assert res.returncode == 1 and res.stderr.startswith("pvc: no default connection: pass -c NAME, set PVC_CONNECTION")


def test_damaged_file_is_named(tmp_path):
    (tmp_path / "connections.json").write_text("{not json")
    os.chmod(tmp_path / "connections.json", 0o600)
    res = pvc(tmp_path, "connection", "list")
    assert res.returncode == 1
    assert res.stderr.startswith(f"pvc: {tmp_path / 'connections.json'}: not valid JSON: ")
    assert len(res.stderr.splitlines()) == 1


def test_readable_file_draws_a_warning(tmp_path):
    ok(tmp_path, "connection", "add", "a", "--address", "10.0.0.1")
    os.chmod(tmp_path / "connections.json", 0o644)
    res = pvc(tmp_path, "connection", "list")
    assert res.returncode == 0 and "others may read it: chmod 600" in res.stderr


def test_existing_folder_keeps_its_mode(tmp_path):
    d = tmp_path / "shared"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    ok(d, "connection", "add", "a", "--address", "10.0.0.1")
    assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert stat.S_IMODE((d / "connections.json").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "address,port,tls,url",
    [
        ("10.0.0.1", 7370, False, "http://10.0.0.1:7370"),
        ("pvc.lan", 443, True, "https://pvc.lan:443"),
        ("fd00::5", 7370, True, "https://[fd00::5]:7370"),
        ("https://pvc.lan/api-proxy/", 7370, False, "https://pvc.lan/api-proxy"),
    ],
)
def test_build_url(address, port, tls, url):
    assert build_url(address, port, tls) == url
    assert check_url(url) is None


def test_check_url_and_mask():
    assert check_url("http://host:99999") is not None
    assert check_url("http://") == "'http://' names no host"
    assert check_url("http://h?x=1") is not None
    assert mask("") == "-" and mask("short") == "****" and mask(KEY) == "****cdef"
    assert Connection(name="x", url="http://h:1").record() == {
        "url": "http://h:1",
        "key": "",
        "verify": True,
        "ca_file": None,
        "ca_pem": None,
        "proxy": False,
        "description": "",
    }


def test_connection_names_complete(tmp_path):
    ok(tmp_path, "connection", "add", "lab", "--address", "10.0.0.1")
    ok(tmp_path, "connection", "add", "lax", "--address", "10.0.0.2")
    ok(tmp_path, "connection", "add", "prod", "--address", "10.0.0.3")
    env = {**os.environ, "PVC_CLIENT_DIR": str(tmp_path), "_PVC_COMPLETE": "bash_complete"}
    for words, expected in [("pvc -c l", ["lab", "lax"]), ("pvc connection remove p", ["prod"])]:
        env.update(COMP_WORDS=words, COMP_CWORD=str(len(words.split()) - 1))
        out = subprocess.run([str(PVC)], capture_output=True, text=True, env=env, timeout=30).stdout
        assert out.splitlines() == [f"plain,{n}" for n in expected]
