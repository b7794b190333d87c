"""Property test: mutated examples never crash the loader, and every error says where it is.

Mutations: delete a key, swap a value's type, put a random value of the same type, insert random bytes,
duplicate a table. At least 2 000 examples (PVC_FUZZ_EXAMPLES overrides, e.g. for a quick local run).
"""

from __future__ import annotations

import copy
import datetime
import os
import re
import tomllib

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvc.config.load import load_bytes, load_text
from tests.harness.examples import example

EXAMPLE_NAMES = ["production-3node", "production-5node", "lab-3node", "lab-1node", "lab-vm-1node", "lab-vm-3node"]
TEXTS = {name: (example(name)).read_text() for name in EXAMPLE_NAMES}
DOCS = {name: tomllib.loads(text) for name, text in TEXTS.items()}
N = int(os.environ.get("PVC_FUZZ_EXAMPLES", "2000"))

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.datetimes(min_value=datetime.datetime(1970, 1, 1)),
    st.dates(),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(doc, prefix=()):
    """Every key path of a parsed document."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield (*prefix, k)
            yield from paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield (*prefix, i)
            yield from paths(v, (*prefix, i))


def get_parent(doc, path):
    for part in path[:-1]:
        doc = doc[part]
    return doc


def same_type_value(draw, old):
    if isinstance(old, bool):
        return draw(st.booleans())
    if isinstance(old, int):
        return draw(st.integers(min_value=-(2**40), max_value=2**40))
    if isinstance(old, str):
        return draw(st.one_of(st.text(max_size=40), st.sampled_from(["", "10.0.0.1", "::1", "/dev/sda", "x" * 300])))
    return draw(values)


@st.composite
def mutated(draw):
    name = draw(st.sampled_from(EXAMPLE_NAMES))
    kind = draw(st.sampled_from(["delete", "swap-type", "random-value", "random-bytes", "duplicate-table"]))
    text = TEXTS[name]
    if kind == "random-bytes":
        raw = text.encode()
        pos = draw(st.integers(min_value=0, max_value=len(raw)))
        junk = draw(st.binary(min_size=1, max_size=16))
        return kind, raw[:pos] + junk + raw[pos:]
    if kind == "duplicate-table":
        headers = [m.start() for m in re.finditer(r"^\[", text, re.M)]
        start = draw(st.sampled_from(headers))
        end = next((h for h in headers if h > start), len(text))
        return kind, (text[:end] + "\n" + text[start:end] + text[end:]).encode()
    doc = copy.deepcopy(DOCS[name])
    path = draw(st.sampled_from(list(paths(doc))))
    parent = get_parent(doc, path)
    if kind == "delete":
        del parent[path[-1]]
    elif kind == "swap-type":
        old_type = type(parent[path[-1]])
        parent[path[-1]] = draw(values.filter(lambda v: type(v) is not old_type))
    else:
        parent[path[-1]] = same_type_value(draw, parent[path[-1]])
    try:
        return kind, tomli_w.dumps(doc).encode()
    except (TypeError, ValueError):  # not expressible in TOML (e.g. a list of mixed tables): mutate as text
        return kind, text.encode() + b"\n" + repr(path).encode()


@settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutations_never_crash_and_errors_are_located(case):
    kind, data = case
    result = load_bytes(data, "fuzz.toml")  # must not raise
    lines = data.count(b"\n") + 1
    parsed = True
    try:
        tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        parsed = False
    for problem in result.problems:
        assert problem.line is not None and 1 <= problem.line <= lines, problem
        assert problem.column is not None and problem.column >= 1, problem
        assert problem.message and "Traceback" not in problem.message
        if parsed:
            assert problem.key, f"{kind}: schema error without a key path: {problem}"
        problem.format("fuzz.toml")
    if kind == "duplicate-table":
        assert not result.valid


def test_examples_round_trip_through_the_writer():
    for name, doc in DOCS.items():
        assert load_text(tomli_w.dumps(doc), name).valid
