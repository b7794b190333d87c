"""`pvc-image`, the node image builder. It arrives with the node image (issue 3)."""

from __future__ import annotations

import sys


def main() -> None:
    print("pvc-image: the image builder is not built yet (node image, issue #3)", file=sys.stderr)
    sys.exit(2)
