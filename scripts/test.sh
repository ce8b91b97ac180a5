#!/usr/bin/env bash
# Install what the tests need and run the whole suite (unit tests over a scripted fake
# upstream, end-to-end tests that start the embedded llama-server themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python -m pytest "$@"
