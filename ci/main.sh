#!/usr/bin/env bash
# The main job: set the machine up, build the node image (cached), and bring up a 3-node lab cluster of it on this
# machine (systemd-nspawn containers with simulated BMCs). The lab stays up: use it with `pvc -c lab ...` and
# `pvc-lab status|ssh|kill|start`, and remove it with `.venv/bin/pvc-lab down`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
for f in examples/*.toml installer/lab/configs/*.toml; do
  .venv/bin/pvc config validate "$f"
done
if [ -e "${PVC_LAB_DIR:-/var/lib/pvc-lab}/lab.json" ]; then
  echo "== a lab is already up; replacing it"
  .venv/bin/pvc-lab down
fi
echo "== pvc-lab up --nodes 3 (builds the image first; a few minutes from an empty cache)"
.venv/bin/pvc-lab up --nodes 3
.venv/bin/pvc-lab status
.venv/bin/pvc -c lab cluster status
.venv/bin/pvc -c lab node list
cat <<'MSG'

The lab is up. Try:
  .venv/bin/pvc -c lab storage status
  .venv/bin/pvc-lab ssh node1 -- ceph -s
  .venv/bin/pvc-lab kill node2 && .venv/bin/pvc -c lab node list     # power loss through IPMI, then fencing
  .venv/bin/pvc-lab down                                              # remove it
MSG
