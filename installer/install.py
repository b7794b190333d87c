"""`pvc-install`, writing the node image to a node's disk (A/B slots and a data partition). Not written yet: nodes
boot the image from USB, ISO or PXE (docs/image.md)."""

from __future__ import annotations

import sys


def main() -> None:
    print(
        "pvc-install: writing the image to a disk is not supported yet; boot nodes from the USB image, the ISO or "
        "PXE (docs/image.md)",
        file=sys.stderr,
    )
    sys.exit(2)
