"""The TOML key locator records the position of every key under pydantic's location paths."""

from __future__ import annotations

from pvc.config.locate import SourceMap

DOC = '''# comment
schema = 1
title = "a \\" ] # } string"
multi = """
[not.a.table]
"""
lit = \'\'\'x = 1\'\'\'

[[nodes]]
name = "a"
ip = { cluster = "1", "quoted key" = 2 }

[nodes.ipmi]
address = "x"

[[nodes]]
name = "b"
arr = [
  1, # c
  { k = "v" },
]

[[nodes.osds]]
path = "p"

[a.b . "c"]
d.e = 1
'''


def pos(sm: SourceMap, *path):
    return sm.position(sm.offsets[tuple(path)])


def test_positions():
    sm = SourceMap(DOC)
    lines = DOC.splitlines()

    def at(*path):
        line, col = pos(sm, *path)
        return lines[line - 1][col - 1 :]

    assert at("schema").startswith("schema")
    assert at("title").startswith("title")
    assert at("lit").startswith("lit")
    assert ("not", "a", "table") not in sm.offsets
    assert at("nodes", 0).startswith("[[nodes]]")
    assert at("nodes", 0, "name") == 'name = "a"'
    assert at("nodes", 0, "ip", "cluster").startswith('cluster = "1"')
    assert at("nodes", 0, "ip", "quoted key").startswith('"quoted key"')
    assert at("nodes", 0, "ipmi", "address").startswith("address")
    assert at("nodes", 1, "name") == 'name = "b"'
    assert at("nodes", 1, "arr", 0).startswith("1,")
    assert at("nodes", 1, "arr", 1, "k").startswith('k = "v"')
    assert at("nodes", 1, "osds", 0, "path").startswith("path")
    assert at("a", "b", "c", "d").startswith("d.e")
    assert at("a", "b", "c", "d", "e").startswith("e = 1")
    assert at("a", "b", "c").startswith('"c"]')


def test_falls_back_to_nearest_ancestor():
    sm = SourceMap(DOC)
    assert sm.locate(("nodes", 0, "ipmi", "missing")) == pos(sm, "nodes", 0, "ipmi")
    assert sm.locate(("nowhere",)) == (1, 1)


def test_truncated_input_does_not_raise():
    for cut in range(len(DOC)):
        SourceMap(DOC[:cut])
