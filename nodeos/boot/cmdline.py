"""The node's kernel command line: the `pvc.*` arguments (pure parsing)."""

from __future__ import annotations

import shlex
from pathlib import Path

PREFIX = "pvc."


def parse(text: str) -> dict[str, str]:
    """`pvc.config=URL pvc.node=hv1 quiet` -> {"config": "URL", "node": "hv1"}; a bare `pvc.x` means "1"."""
    out: dict[str, str] = {}
    try:
        words = shlex.split(text)
    except ValueError:  # an unbalanced quote: fall back to plain words
        words = text.split()
    for word in words:
        if not word.startswith(PREFIX):
            continue
        key, _, value = word[len(PREFIX) :].partition("=")
        if key:
            out[key] = value if "=" in word else "1"
    return out


def read(path: Path = Path("/proc/cmdline")) -> dict[str, str]:
    try:
        return parse(path.read_text())
    except OSError:
        return {}


def expand(url: str, *, mac: str | None, node: str | None) -> str | None:
    """Substitute `${mac}` (as 52-54-00-..., the iPXE/PXELINUX form) and `${node}`; None if one is needed but unknown."""
    if "${mac}" in url:
        if mac is None:
            return None
        url = url.replace("${mac}", mac.lower().replace(":", "-"))
    if "${node}" in url:
        if node is None:
            return None
        url = url.replace("${node}", node)
    return url
