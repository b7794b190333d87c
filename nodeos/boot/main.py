"""`pvc-node`, the boot-time entry point run by pvc-node.service inside the image."""

from __future__ import annotations

import sys


def main() -> None:
    print("pvc-node: boot is being built (issue #3)", file=sys.stderr)
    sys.exit(2)
