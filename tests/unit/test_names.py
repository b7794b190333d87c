"""The one object-name pattern (config-schema/names.py)."""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel, ValidationError

from pvc.config.names import NAME_PATTERN, Name, check_name

VALID = ["a", "A", "0", "_", "web1", "vm_01.prod-a", "rbd", "x" * 64, "1.2.3", "a-", "a.", "_hidden"]
INVALID = {
    "": "empty",
    "x" * 65: "65 characters",
    "-rf": "starts with '-'",
    ".hidden": "starts with '.'",
    "..": "starts with '.'",
    "a:b": "contains ':'",
    "pool/vol": "contains '/'",
    "vol@snap": "contains '@'",
    "a b": "contains ' '",
    "a\tb": "U+0009",
    "a\nb": "U+000A",
    "a\x1b[31m": "U+001B",
    "a\x00": "U+0000",
    "vé": "contains 'é'",
    "a$b": "contains '$'",
    "a\\b": "contains '\\\\'",
    "web1\n": "U+000A",
}


class M(BaseModel):
    name: Name


@pytest.mark.parametrize("name", VALID)
def test_valid_names_pass_unchanged(name):
    assert check_name(name) == name
    assert M(name=name).name == name
    assert re.fullmatch(NAME_PATTERN, name)


@pytest.mark.parametrize(("name", "why"), INVALID.items())
def test_invalid_names_are_refused_saying_why(name, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        check_name(name, "volume name")
    with pytest.raises(ValidationError):
        M(name=name)
    assert not re.fullmatch(NAME_PATTERN, name)


def test_the_message_names_what_was_checked():
    with pytest.raises(ValueError, match=r"^the pool name 'a:b' contains ':'"):
        check_name("a:b", "pool name")


def test_the_json_schema_carries_the_pattern():
    schema = M.model_json_schema()["properties"]["name"]
    assert schema["pattern"] == NAME_PATTERN and schema["maxLength"] == 64 and schema["minLength"] == 1
