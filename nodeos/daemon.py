"""`pvcd`, the node daemon. Its controllers arrive with the cluster runtime (issue 4)."""

from __future__ import annotations

import sys


def main() -> None:
    print("pvcd: the node daemon is not built yet (cluster runtime, issue #4)", file=sys.stderr)
    sys.exit(2)
