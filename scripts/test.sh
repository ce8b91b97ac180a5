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
# The web face's browser tests drive Debian's chromium through Playwright's Python package
# (tests/e2e/test_playground_browser.py); Playwright's own browser download is never used.
if [ ! -x /usr/bin/chromium ]; then
  echo "test: installing chromium (Debian)..."
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    chromium >/dev/null
fi
# LiteLLM's own proxy (tests/unit/test_litellm_bridge.py serves optillm's provider behind it)
# pins gunicorn<24 and rich<14, so it lives in a venv of its own that sees this environment's
# packages (optillm's dependencies) but never changes them.
LITELLM_VENV="${OPTILLM_LITELLM_PROXY_VENV:-$HOME/.cache/optillm-venvs/litellm-proxy}"
if ! LITELLM_LOCAL_MODEL_COST_MAP=True "$LITELLM_VENV/bin/python" -c \
    "import fastapi, uvicorn, litellm_proxy_extras, litellm.proxy.proxy_cli" 2>/dev/null; then
  echo "test: installing LiteLLM's proxy into $LITELLM_VENV..."
  python -m venv --system-site-packages "$LITELLM_VENV"
  "$LITELLM_VENV/bin/python" -m pip install -q 'litellm[proxy]>=1.60'
fi
# the venv's python runs LiteLLM's proxy CLI (python -m litellm.proxy.proxy_cli)
export OPTILLM_LITELLM_PROXY_PYTHON="$LITELLM_VENV/bin/python"
python -m pytest "$@"
