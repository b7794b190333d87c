"""Sizes as people write them: "4G", "512MiB", "1.5T" or a number of bytes (binary units).

The one parser for cluster.toml (`types.Size`) and the `pvc` command's size arguments; it imports nothing heavy,
because the command loads it at start-up.
"""

from __future__ import annotations

import re

UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from `text` (a trailing "iB" or "B" is allowed); ValueError, saying what a size looks like, if it is
    not one. Zero is a size here: callers that need a positive one check."""
    match = SIZE_RE.match(text)
    if not match:
        raise ValueError(f'\'{text}\' is not a size (expected like "512M", "4G", "1.5T" or a number of bytes)')
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])
