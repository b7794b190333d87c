"""`pvc-install`, writing the image to a node's disk. It arrives with the node image (issue 3)."""

from __future__ import annotations

import sys


def main() -> None:
    print("pvc-install: not built yet (node image, issue #3)", file=sys.stderr)
    sys.exit(2)
