"""The one pattern for every object name an administrator gives PVC: VMs, pools, volumes, snapshots, networks, nodes.

A name ends up in ZooKeeper paths, Ceph object names, qemu-img and libvirt arguments, file names and CLI tables,
so it may hold only letters, digits, '_', '.' and '-', must not start with '.' or '-' (a hidden file, an option),
and is at most 64 characters. That refuses ':' (qemu's `rbd:pool/image:key=value` syntax), '/' (paths), '@' (RBD
snapshots), whitespace and control characters (log and terminal injection). The API, the CLI and storage all
import `Name` or `check_name` from here; nothing else spells the pattern.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

NAME_MAX = 64
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
NAME_RULE = "1-64 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
_NAME_RE = re.compile(NAME_PATTERN)


def check_name(value: str, what: str = "name") -> str:
    """`value` when it is a valid object name, else ValueError saying what is wrong with it."""
    if _NAME_RE.fullmatch(value):
        return value
    if not value:
        raise ValueError(f"the {what} is empty ({NAME_RULE})")
    if len(value) > NAME_MAX:
        raise ValueError(f"the {what} is {len(value)} characters long ({NAME_RULE})")
    bad = next((c for c in value if not (c.isascii() and (c.isalnum() or c in "_.-"))), None)
    if bad is not None:
        shown = repr(bad) if bad.isprintable() else f"U+{ord(bad):04X}"
        raise ValueError(f"the {what} {value!r} contains {shown} ({NAME_RULE})")
    raise ValueError(f"the {what} {value!r} starts with {value[0]!r} ({NAME_RULE})")


Name = Annotated[
    str,
    AfterValidator(check_name),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": NAME_MAX}),
]
