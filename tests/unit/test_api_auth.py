"""API keys and roles as pure functions: digests, matching, roles by method, the failed-authentication limit, and the
start-up helper that keeps the join key out of the API process."""

from __future__ import annotations

import hashlib
import hmac
import pickle
import subprocess
import sys

import pytest

from pvc.api import keys
from pvc.api.ratelimit import FailureLimiter
from pvc.api.spec import default_role, operation
from pvc.api.startup import build, redacted
from pvc.config.schema import ApiKey
from pvc.config.secrets import api_key_pepper, initial_api_key
from pvc.nodeos.state.models import ApiKeyRecord
from tests.harness.examples import example, example_cluster, example_join_key

PEPPER = b"p" * 32


def test_roles_in_increasing_power():
    assert (
        keys.allows("admin", "operator") and keys.allows("operator", "operator") and keys.allows("admin", "read-only")
    )
    assert not keys.allows("read-only", "operator") and not keys.allows("operator", "admin")


def test_a_record_holds_a_salted_peppered_digest_never_the_key():
    key = keys.new_key()
    assert len(key) == 43
    a = keys.record("a", "admin", "api", key, PEPPER)
    b = keys.record("b", "admin", "api", key, PEPPER)
    assert a.digest != b.digest and a.salt != b.salt  # equal keys, different digests
    assert key not in a.model_dump_json() and hashlib.sha256(key.encode()).hexdigest() not in a.model_dump_json()
    assert keys.record("a", "admin", "api", key, b"q" * 32, bytes.fromhex(a.salt)).digest != a.digest  # the pepper


def test_match_finds_the_record_of_a_key_and_nothing_for_others():
    made = {n: keys.new_key() for n in ("one", "two")}
    records = [keys.record(n, "operator", "api", k, PEPPER) for n, k in made.items()]
    plain = "s" * 40
    records.append(
        ApiKeyRecord(
            name="old",
            role="read-only",
            owner="config",
            scheme="sha256",
            digest=hashlib.sha256(plain.encode()).hexdigest(),
        )
    )
    assert getattr(keys.match(records, made["two"], PEPPER), "name", None) == "two"
    assert getattr(keys.match(records, plain, PEPPER), "name", None) == "old"
    assert keys.match(records, made["two"] + "x", PEPPER) is None
    assert keys.match(records, made["one"], b"other pepper" * 3) is None


def test_match_compares_with_every_record(monkeypatch):
    """No early exit: the number of comparisons does not depend on where (or whether) the key matches."""
    made = [keys.new_key() for _ in range(5)]
    records = [keys.record(f"k{i}", "admin", "api", k, PEPPER) for i, k in enumerate(made)]
    calls: list[int] = []
    real = hmac.compare_digest

    def counted(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counted)
    for presented in (made[0], made[4], "nothing"):
        calls.clear()
        keys.match(records, presented, PEPPER)
        assert len(calls) == 5


def test_configured_keys_get_fixed_salts_so_seeding_is_idempotent(tmp_path):
    (tmp_path / "k").write_text("f" * 40 + "\n")
    entries = [
        ApiKey(name="inline", key="i" * 32, role="admin"),
        ApiKey(name="file", key_file="k"),
        ApiKey(name="hashed", sha256="a" * 64, role="operator"),
    ]
    first = keys.key_material(entries, tmp_path, PEPPER, "initial-key")
    again = keys.key_material(entries, tmp_path, PEPPER, "initial-key")
    assert [r.digest for r in first.configured] == [r.digest for r in again.configured]  # the same at every start
    assert [(r.name, r.role, r.owner, r.scheme) for r in first.configured] == [
        ("inline", "admin", "config", "hmac-sha256"),
        ("file", "read-only", "config", "hmac-sha256"),
        ("hashed", "operator", "config", "sha256"),
    ]
    assert (first.initial.name, first.initial.role, first.initial.owner) == ("initial", "admin", "derived")
    assert keys.match([first.initial], "initial-key", PEPPER) == first.initial


def test_key_files_must_be_readable_and_long_enough(tmp_path):
    (tmp_path / "short").write_text("x" * 31)
    with pytest.raises(keys.KeyFileError, match=r"'s': the key in .* is 31 characters long; at least 32"):
        keys.configured_record(ApiKey(name="s", key_file="short"), tmp_path, PEPPER)
    with pytest.raises(keys.KeyFileError, match=r"'m': cannot read .*missing"):
        keys.configured_record(ApiKey(name="m", key_file="missing"), tmp_path, PEPPER)


def test_default_role_by_method_and_explicit_roles():
    assert default_role("GET") == "read-only" and default_role("post") == "admin" and default_role("DELETE") == "admin"

    class R:
        @operation(summary="read")
        def on_get(self, req, resp) -> None: ...

        @operation(summary="change")
        def on_patch(self, req, resp) -> None: ...

        @operation(summary="lifecycle", role="operator")
        def on_post(self, req, resp) -> None: ...

        @operation(summary="open", auth=False)
        def on_put(self, req, resp) -> None: ...

    roles = {m: getattr(R, f"on_{m}").__pvc_operation__.role for m in ("get", "patch", "post", "put")}
    assert roles == {"get": "read-only", "patch": "admin", "post": "operator", "put": None}


def test_limiter_allows_a_burst_then_one_failure_per_refill():
    now = [0.0]
    lim = FailureLimiter(burst=3, refill_seconds=10, clock=lambda: now[0])
    for _ in range(3):
        assert lim.retry_after("a") is None
        lim.failed("a")
    assert lim.retry_after("a") == pytest.approx(10)
    assert lim.retry_after("b") is None  # per address
    now[0] = 4
    assert lim.retry_after("a") == pytest.approx(6)
    now[0] = 10
    assert lim.retry_after("a") is None
    lim.failed("a")
    assert lim.retry_after("a") == pytest.approx(10)
    now[0] = 1000
    assert lim.retry_after("a") is None  # refilled, never beyond the burst
    for _ in range(3):
        lim.failed("a")
    assert lim.retry_after("a") is not None


def test_limiter_forgets_the_oldest_address_beyond_its_size():
    lim = FailureLimiter(burst=1, refill_seconds=100, max_addresses=2, clock=lambda: 0.0)
    for address in ("a", "b", "c"):
        lim.failed(address)
    assert lim.retry_after("a") is None and lim.retry_after("b") is not None and lim.retry_after("c") is not None


def test_the_startup_helper_derives_without_handing_out_the_join_key():
    path = example("lab-3node")
    cfg, join_key = example_cluster("lab-3node"), example_join_key("lab-3node")
    out = subprocess.run(
        [sys.executable, "-m", "pvc.api.startup", str(path)], capture_output=True, check=True, timeout=60
    ).stdout
    assert join_key.encode() not in out and b"pvc-lab-bmc" not in out  # neither the join key nor the BMC password
    startup = pickle.loads(out)
    here = build(str(path))
    assert startup.cfg == here.cfg and startup.zk_password == here.zk_password
    assert startup.keys.initial.digest == here.keys.initial.digest
    assert startup.cfg.cluster.join_key is None and all(n.ipmi.password is None for n in startup.cfg.nodes)
    assert startup.keys.pepper == api_key_pepper(join_key)
    assert keys.match([startup.keys.initial], initial_api_key(join_key), startup.keys.pepper) is not None
    assert redacted(cfg).network == cfg.network and redacted(cfg).nodes[0].ip == cfg.nodes[0].ip


def test_the_startup_helper_names_what_is_wrong(tmp_path):
    bad = tmp_path / "cluster.toml"
    bad.write_text(example("lab-1node").read_text().replace("join_key = ", 'join_key_file = "gone.key"\n# '))
    out = subprocess.run(
        [sys.executable, "-m", "pvc.api.startup", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1 and out.stderr.startswith("cluster.join_key_file: cannot read") and out.stdout == ""
