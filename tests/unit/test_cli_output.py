"""Rendering of read commands: aligned plain tables, field lists, and the JSON/YAML documents."""

from __future__ import annotations

import json

import yaml

from pvc.cli.output import ago, cell, counts, duration, emit, fields, mib, printable, table


def test_table_aligns_columns_without_trailing_spaces():
    text = table(["name", "state", "tags"], [("web1", "start", ["a", "b"]), ("database-2", None, [])])
    assert text.splitlines() == [
        "NAME        STATE  TAGS",
        "web1        start  a,b",
        "database-2  -      -",
    ]


def test_table_with_no_rows_is_the_header():
    assert table(["id", "kind"], []) == "ID  KIND"


def test_fields_align_values():
    assert fields([("name", "web1"), ("memory", "64M"), ("autostart", False)]).splitlines() == [
        "name:       web1",
        "memory:     64M",
        "autostart:  no",
    ]


def test_cells_and_units():
    assert [cell(v) for v in (None, True, False, 0.5, 3, ["x"], [])] == ["-", "yes", "no", "0.5", "3", "x", "-"]
    assert mib(64) == "64M" and mib(8192) == "8192M" and mib(16384) == "16.0G" and mib(None) == "-"
    assert duration(5) == "5s" and duration(300) == "5m" and duration(7300) == "2h" and duration(400000) == "4d"
    assert ago(100.0, now=160.0) == "60s" and ago(None) == "-"
    assert counts({"total": 3, "by_state": {"run": 2, "dead": 1}}) == "3 (1 dead, 2 run)"
    assert counts({"total": 0, "by_state": {}}) == "0"


def test_emit_formats(capsys):
    data = [{"name": "web1", "tags": ["a"], "meta": {"autostart": False}}]
    emit(data, "json", lambda d: "unused")
    assert json.loads(capsys.readouterr().out) == data
    emit(data, "yaml", lambda d: "unused")
    assert yaml.safe_load(capsys.readouterr().out) == data
    emit(data, "table", lambda d: table(["name"], [(v["name"],) for v in d]))
    assert capsys.readouterr().out == "NAME\nweb1\n"


def test_printable_strips_terminal_escapes_but_keeps_tabs():
    lines = ["\x1bcSeaBIOS (version 1.16)", "\x1b[1;31mred\x1b[0m\tcell", "bell\x07 \x1b]0;title\x07done\r", "plain"]
    assert printable(lines) == "SeaBIOS (version 1.16)\nred\tcell\nbell done\nplain"


def test_every_table_cell_loses_c0_and_c1_controls():
    hostile = "web\x1b]0;pwned\x07\x1b[2J\x9b31m\x85\x00name\tx"  # OSC title, CSI clear, C1 CSI and NEL, NUL, tab
    text = table(["name", "tags"], [(hostile, [hostile, "ok"])])
    assert text.splitlines()[1] == "webname x  webname x,ok"
    assert fields([("name", hostile)]) == "name:  webname x"
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text if c != "\n")
