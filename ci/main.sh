#!/usr/bin/env bash
# The main job: set the machine up, then validate every example cluster.toml and show how node1 of the lab
# example resolves. (When the lab lands this becomes: build the image, bring up the lab.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
for f in examples/*.toml; do
  .venv/bin/pvc config validate "$f"
done
.venv/bin/pvc config show examples/lab-3node.toml --node node1
