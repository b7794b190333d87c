"""Path parameters are read only through their declarations (pvc.api.paths): the value a method receives, the 400
naming the parameter, and the schema the OpenAPI document shows, which never admits less than the check accepts."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvc.api.app import build_document
from pvc.api.paths import PATH_PARAMETERS, PathInvalid, check_path, declared
from pvc.config.names import NAME_PATTERN
from pvc.config.networks import MAX_VNI
from pvc.config.schema import AclFields, Reservation


def test_every_route_parameter_is_declared_and_every_declaration_used():
    doc = build_document()
    ops = [op for item in doc["paths"].values() for op in item.values()]
    in_routes = {p["name"] for op in ops for p in op.get("parameters", []) if p["in"] == "path"}
    assert in_routes == set(PATH_PARAMETERS), in_routes ^ set(PATH_PARAMETERS)
    with pytest.raises(KeyError, match="'colour' is not declared"):
        declared("colour")


def test_values_reach_the_method_as_their_declaration_reads_them():
    assert check_path({"vni": "4100", "mac": "52-54-00-AA-00-01", "osd": "osd.3", "pool": "vms"}) == {
        "vni": 4100,
        "mac": "52:54:00:aa:00:01",
        "osd": 3,
        "pool": "vms",
    }
    assert check_path({"osd": "7", "description": ".web-in"}) == {"osd": 7, "description": ".web-in"}


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"vni": "abc"}, "vni", "'abc' is not a VNI (a number 1-16777215)"),
        ({"vni": "0"}, "vni", "'0' is not a VNI"),
        ({"vni": str(MAX_VNI + 1)}, "vni", "is not a VNI"),
        ({"vni": "+5"}, "vni", "is not a VNI"),
        ({"mac": "52:54:00:41:00"}, "mac", "is not a MAC address"),
        ({"mac": "01:00:5e:00:00:01"}, "mac", "multicast"),
        ({"mac": "52:54-00:00:00:01"}, "mac", "is not a MAC address"),
        ({"mac": " 52:54:00:00:00:01"}, "mac", "does not match"),
        ({"description": "a b"}, "description", "should match pattern"),
        ({"pool": "vms", "volume": "a:b"}, "volume", "the volume name 'a:b' contains ':'"),
        ({"osd": "osd.x"}, "osd", "a number, or osd.N"),
        ({"task_id": "-rf"}, "task_id", "the task id '-rf' is not valid"),
        ({"node": "a\uffffb"}, "node", "contains '/'"),  # a %2F that EncodedSlashes kept in its segment
    ],
)
def test_a_refusal_names_the_parameter(params, field, words):
    with pytest.raises(PathInvalid) as refusal:
        check_path(params)
    assert refusal.value.field == field
    assert str(refusal.value).startswith(f"path parameter '{field}': ") and words in str(refusal.value)


def test_a_path_names_what_a_body_creates():
    """The MAC and ACL rule name of a path show the same pattern as the body fields that create them."""
    fields = {
        "mac": Reservation.model_json_schema()["properties"]["mac"],
        "description": AclFields.model_json_schema()["properties"]["description"],
    }
    for name, field in fields.items():
        assert declared(name).schema["pattern"] == field["pattern"], name
    assert declared("vm").schema["pattern"] == NAME_PATTERN


def _shown(name: str, value: str) -> bool:
    schema = declared(name).schema
    if "pattern" in schema:
        return re.fullmatch(schema["pattern"], value) is not None
    return value.isdigit() and schema["minimum"] <= int(value) <= schema["maximum"]


SAMPLES = st.one_of(
    st.text(max_size=24),
    st.from_regex(r"[0-9a-fA-F:.\- ]{0,20}", fullmatch=True),
    st.integers(-5, MAX_VNI + 5).map(str),
)


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(sorted(PATH_PARAMETERS)), value=SAMPLES)
def test_a_value_the_check_accepts_is_inside_the_schema_shown(name, value):
    """What the OpenAPI document shows never admits less than the server accepts (schemathesis's negative data
    must be refused)."""
    try:
        check_path({name: value})
    except PathInvalid:
        return
    assert _shown(name, value), (name, value)
