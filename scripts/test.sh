#!/usr/bin/env bash
# Install what the tests need and run the whole suite (unit tests over a scripted fake
# upstream, end-to-end tests that start the embedded llama-server, stub upstreams, gunicorn
# and a private redis-server themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# The gateway's Redis tests start their own redis-server (Debian's package) on loopback.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "test: installing redis-server (Debian)..."
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    redis-server >/dev/null
fi
python -m pytest "$@"
