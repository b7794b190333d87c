"""Where each key of a TOML document stands in its source: key path → (line, column).

tomllib gives values but no positions, and an error message that says only "nodes.1.ip.cluster" makes an
administrator count tables by hand. This scanner walks the (already tomllib-validated) source once and records
the position of every key, table header, array-of-tables entry and array element, under the same path pydantic
uses in its error locations: ("nodes", 1, "ip", "cluster").
"""

from __future__ import annotations

import bisect
import contextlib
import re
from collections.abc import Sequence

KeyPath = tuple[str | int, ...]  # where a key stands in the document: ("nodes", 1, "ip", "cluster")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


class SourceMap:
    """Positions of the keys of one TOML source."""

    def __init__(self, text: str) -> None:
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.offsets: dict[KeyPath, int] = {}
        scanner = _Scanner(text, self.offsets)
        with contextlib.suppress(IndexError, ValueError):  # truncated or broken input: keep what was found
            scanner.run()

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset."""
        line = bisect.bisect_right(self._line_starts, offset) - 1
        return line + 1, offset - self._line_starts[line] + 1

    def offset(self, path: Sequence[str | int]) -> int | None:
        """Offset of the key at `path`, or of its nearest recorded ancestor; None if nothing matches."""
        path = tuple(path)
        while path:
            if path in self.offsets:
                return self.offsets[path]
            path = path[:-1]
        return None

    def locate(self, path: Sequence[str | int]) -> tuple[int, int]:
        offset = self.offset(path)
        return self.position(offset) if offset is not None else (1, 1)


class _Scanner:
    def __init__(self, text: str, offsets: dict[KeyPath, int]) -> None:
        self.s = text
        self.i = 0
        self.offsets = offsets
        self.aot_counts: dict[KeyPath, int] = {}

    # -- helpers -------------------------------------------------------------------------------------------
    def record(self, path: KeyPath, offset: int) -> None:
        self.offsets.setdefault(path, offset)

    def skip_space(self, newlines: bool = False) -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t" or (newlines and c in "\r\n"):
                self.i += 1
            elif newlines and c == "#":
                while self.i < len(s) and s[self.i] != "\n":
                    self.i += 1
            else:
                return

    def parse_key(self) -> list[tuple[str, int]]:
        """A dotted key: [(part, offset), ...]."""
        parts: list[tuple[str, int]] = []
        while True:
            self.skip_space()
            start = self.i
            c = self.s[self.i]
            if c == '"':
                parts.append((self.basic_string(), start))
            elif c == "'":
                end = self.s.index("'", self.i + 1)
                parts.append((self.s[self.i + 1 : end], start))
                self.i = end + 1
            else:
                m = _BARE_KEY.match(self.s, self.i)
                if not m:
                    raise IndexError("not a key")
                parts.append((m.group(), start))
                self.i = m.end()
            self.skip_space()
            if self.i < len(self.s) and self.s[self.i] == ".":
                self.i += 1
                continue
            return parts

    def basic_string(self) -> str:
        """A one-line "basic" string starting at self.i; returns its value."""
        s = self.s
        self.i += 1
        out = []
        while s[self.i] != '"':
            if s[self.i] == "\\":
                nxt = s[self.i + 1]
                if nxt in _ESCAPES:
                    out.append(_ESCAPES[nxt])
                    self.i += 2
                elif nxt in "uU":
                    width = 4 if nxt == "u" else 8
                    out.append(chr(int(s[self.i + 2 : self.i + 2 + width], 16)))
                    self.i += 2 + width
                else:
                    self.i += 2
            else:
                out.append(s[self.i])
                self.i += 1
        self.i += 1
        return "".join(out)

    def resolve(self, parts: list[tuple[str, int]], base: KeyPath = ()) -> KeyPath:
        """The key path of a dotted key: names that refer to an array of tables refer to its last entry."""
        path = base
        for name, offset in parts:
            path = (*path, name)
            self.record(path, offset)
            if path in self.aot_counts:
                path = (*path, self.aot_counts[path] - 1)
        return path

    # -- grammar -------------------------------------------------------------------------------------------
    def run(self) -> None:
        table: KeyPath = ()
        s = self.s
        while True:
            self.skip_space(newlines=True)
            if self.i >= len(s):
                return
            start = self.i
            if s.startswith("[[", self.i):
                self.i += 2
                parts = self.parse_key()
                parent = self.resolve(parts[:-1])
                array = (*parent, parts[-1][0])
                self.record(array, parts[-1][1])
                index = self.aot_counts.get(array, 0)
                self.aot_counts[array] = index + 1
                table = (*array, index)
                self.record(table, start)
                self.i = s.index("]]", self.i) + 2
            elif s[self.i] == "[":
                self.i += 1
                parts = self.parse_key()
                table = self.resolve(parts[:-1])
                table = (*table, parts[-1][0])
                self.record(table, parts[-1][1])
                self.i = s.index("]", self.i) + 1
            else:
                self.key_value(table)

    def key_value(self, table: KeyPath) -> None:
        parts = self.parse_key()
        path = table
        for name, offset in parts:
            path = (*path, name)
            self.record(path, offset)
        self.skip_space()
        if self.s[self.i] != "=":
            raise IndexError("expected '='")
        self.i += 1
        self.skip_space()
        self.value(path)

    def value(self, path: KeyPath) -> None:
        s = self.s
        c = s[self.i]
        if s.startswith('"""', self.i):
            self.i += 3
            while not s.startswith('"""', self.i):
                self.i += 2 if s[self.i] == "\\" else 1
            self.i += 3
            while self.i < len(s) and s[self.i] == '"':  # up to two quotes may end the content
                self.i += 1
        elif s.startswith("'''", self.i):
            self.i = s.index("'''", self.i + 3) + 3
            while self.i < len(s) and s[self.i] == "'":
                self.i += 1
        elif c == '"':
            self.basic_string()
        elif c == "'":
            self.i = s.index("'", self.i + 1) + 1
        elif c == "[":
            self.i += 1
            index = 0
            while True:
                self.skip_space(newlines=True)
                if s[self.i] == "]":
                    self.i += 1
                    return
                self.record((*path, index), self.i)
                self.value((*path, index))
                index += 1
                self.skip_space(newlines=True)
                if s[self.i] == ",":
                    self.i += 1
        elif c == "{":
            self.i += 1
            while True:
                self.skip_space()
                if s[self.i] == "}":
                    self.i += 1
                    return
                self.key_value(path)
                self.skip_space()
                if s[self.i] == ",":
                    self.i += 1
        else:
            start = self.i
            while self.i < len(s) and s[self.i] not in ",]}\n#":
                self.i += 1
            if self.i == start:
                raise IndexError("empty value")
