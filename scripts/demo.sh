#!/usr/bin/env bash
# The main job: install, start the proxy in front of the embedded local model, ask it a real
# question (plainly and through two approaches), print the answers, stop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python scripts/demo.py "$@"
