"""`pvc config validate|init|schema|show` end to end through the real console script and Click."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zlib

import pytest
from click.testing import CliRunner

from pvc.cli.main import cli
from pvc.config.load import load
from tests.harness.examples import example


def pvc(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("pvc", path=os.path.dirname(sys.executable)) or "pvc"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def assert_no_traceback(result) -> None:
    out = (getattr(result, "stdout", "") or "") + (getattr(result, "stderr", "") or "")
    assert "Traceback" not in out


def test_valid_example_exits_0():
    res = pvc("config", "validate", str(example("production-3node")))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid" in res.stdout


def test_duplicate_ip_one_line_at_second_node(tmp_path):
    text = (example("production-3node")).read_text().replace('cluster = "10.0.0.2"', 'cluster = "10.0.0.1"')
    f = tmp_path / "c.toml"
    f.write_text(text)
    res = pvc("config", "validate", str(f))
    assert res.returncode == 1
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout
    second = text.splitlines().index(next(x for x in text.splitlines() if 'name = "hv2"' in x)) + 1
    file, line, col, rest = lines[0].split(":", 3)
    assert file == str(f) and int(line) > second and int(col) > 0
    assert text.splitlines()[int(line) - 1].startswith('ip = { upstream = "10.100.0.2", cluster = "10.0.0.1"')
    assert "'hv1'" in rest and "'hv2'" in rest


def png_bytes() -> bytes:
    raw = b"\x00\xff\x00\x00"
    ihdr = b"\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_png_prints_one_error_line_and_exits_1(tmp_path):
    f = tmp_path / "logo.png"
    f.write_bytes(png_bytes())
    res = pvc("config", "validate", str(f))
    assert res.returncode == 1
    assert len(res.stdout.strip().splitlines()) == 1 and res.stderr == ""
    assert res.stdout.startswith(f"{f}:1:1:") and "not UTF-8" in res.stdout


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"", "required key 'schema' is missing"),
        (b"schema = 1\n[cluster\nname = 'x'\n", "TOML syntax error"),
        (b"\x00\x01\x02binary\xfe\xff", "not UTF-8"),
        (b"schema = 1\x00\n", "TOML syntax error"),
        (b"schema = 'one'\n", "unsupported schema version 'one'"),
        (b"[[nodes]]\n[nodes]\n", "TOML syntax error"),
    ],
)
def test_bad_inputs_exit_1_without_traceback(tmp_path, content, needle):
    f = tmp_path / "c.toml"
    f.write_bytes(content)
    res = pvc("config", "validate", str(f))
    assert res.returncode == 1 and needle in res.stdout
    assert_no_traceback(res)
    for line in res.stdout.strip().splitlines():
        assert line.startswith(f"{f}:")


def test_directory_missing_and_huge_files(tmp_path):
    res = pvc("config", "validate", str(tmp_path))
    assert res.returncode == 1 and "is a directory" in res.stdout
    res = pvc("config", "validate", str(tmp_path / "nope.toml"))
    assert res.returncode == 1 and "no such file" in res.stdout
    big = tmp_path / "big.toml"
    with open(big, "wb") as fh:
        fh.write(b'x = "' + b"a" * (50 * 1024 * 1024) + b'"\n')
    res = pvc("config", "validate", str(big))
    assert res.returncode == 1 and "larger than" in res.stdout
    assert_no_traceback(res)


def test_usage_error_exits_2():
    assert pvc("config", "validate").returncode == 2
    assert pvc("config", "validate", "--format", "xml", "x").returncode == 2


def test_json_format(tmp_path):
    text = (example("production-3node")).read_text().replace("[fencing]", "[fenceing]")
    f = tmp_path / "c.toml"
    f.write_text(text)
    res = pvc("config", "validate", "--format", "json", str(f))
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert doc["valid"] is False and doc["warnings"] == []
    (err,) = doc["errors"]
    assert set(err) == {"key", "line", "column", "message"}
    assert err["key"] == "fenceing" and "did you mean 'fencing'" in err["message"]


def test_warnings_are_apart_and_become_errors_with_strict():
    f = str(example("lab-1node"))
    res = pvc("config", "validate", f)
    assert res.returncode == 0
    assert "warning: only one coordinator" in res.stderr and "warning:" not in res.stdout
    res = pvc("config", "validate", "--strict", f)
    assert res.returncode == 1 and "only one coordinator" in res.stdout
    doc = json.loads(pvc("config", "validate", "--strict", "--format", "json", f).stdout)
    assert doc["valid"] is False and len(doc["errors"]) == 2 and doc["warnings"] == []
    doc = json.loads(pvc("config", "validate", "--format", "json", f).stdout)
    assert doc["valid"] is True and len(doc["warnings"]) == 2


@pytest.mark.parametrize("nodes", [1, 2, 3, 5, 9])
@pytest.mark.parametrize("lab", [False, True])
def test_init_writes_valid_files_with_fresh_keys(tmp_path, nodes, lab):
    out = tmp_path / "cluster.toml"
    args = ["config", "init", "--nodes", str(nodes), "-o", str(out)] + (["--lab"] if lab else [])
    res = run(*args)
    assert res.exit_code == 0, res.output
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    result = load(out)
    assert result.valid, [p.format(str(out)) for p in result.errors]
    assert len(result.config.nodes) == nodes
    assert "# " in out.read_text()  # commented
    again = tmp_path / "again.toml"
    run(*[a if a != str(out) else str(again) for a in args])
    assert load(again).config.cluster.join_key != result.config.cluster.join_key
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2 and "--force" in res.output


def test_init_to_stdout_is_valid():
    res = run("config", "init", "--nodes", "3")
    from pvc.config.load import load_text

    assert load_text(res.output).valid


def test_schema_prints_json_schema():
    res = pvc("config", "schema")
    doc = json.loads(res.stdout)
    assert doc["title"] == "PVC cluster.toml" and "nodes" in doc["properties"]


def test_show_node_view_redacts_secrets():
    f = str(example("production-5node"))
    res = pvc("config", "show", f, "--node", "hv4", "--format", "json")
    assert res.returncode == 0, res.stderr
    view = json.loads(res.stdout)
    assert view["roles"] == ["hypervisor", "storage"]
    assert view["ips"] == {"upstream": "10.100.0.4", "cluster": "10.0.0.4", "storage": "10.0.1.4"}
    assert "zookeeper" not in view["services"] and "ceph-osd" in view["services"]
    assert view["ipmi"]["password"] == "<redacted>" and view["join_key"] == "<redacted>"
    assert "join.key" not in res.stdout
    res = pvc("config", "show", f, "--node", "hv1")
    assert res.returncode == 0 and "zookeeper" in res.stdout and "<redacted>" in res.stdout
    res = pvc("config", "show", f, "--node", "hv9")
    assert res.returncode == 1 and "no node 'hv9'" in res.stderr and "hv1" in res.stderr
