"""`pvc-lab`, N nodes of the real image on one machine. It arrives with the node image (issue 3)."""

from __future__ import annotations

import sys


def main() -> None:
    print("pvc-lab: not built yet (node image and lab, issue #3)", file=sys.stderr)
    sys.exit(2)
