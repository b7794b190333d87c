#!/usr/bin/env bash
# The test command: set the machine up (idempotent), lint, type-check, then run the test suite.
# Extra arguments go to pytest (e.g. `bash ci/test.sh tests/unit -k schema`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/python ci/typecheck.py
echo "== pytest"
set +e
.venv/bin/python -m pytest -ra --durations=30 "${@:-tests}"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit "$rc"
