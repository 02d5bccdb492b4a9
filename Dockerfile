# syntax=docker/dockerfile:1
#
# qroute: gRPC query-domain router. Two targets:
#
#   docker build -t qroute .                             # the router (the default)
#   docker build --target indexer -t qroute-indexer .    # + scikit-learn, for index.head
#
#   docker run --rm -p 127.0.0.1:50051:50051 -p 127.0.0.1:9100:9100 \
#       -e QROUTE_STORE__LOCATION=http://qdrant:6333 -e QROUTE_STORE__API_KEY=... qroute
#
# Inside the image the router listens on 0.0.0.0 (gRPC and metrics): a container's
# loopback is unreachable from outside it. Outside containers the default stays
# 127.0.0.1. Without a Qdrant server (QROUTE_STORE__LOCATION) the router serves from an
# empty embedded store and health stays NOT_SERVING. See docs/deploy.md for the
# Compose stack and the Kubernetes manifests.

# Pinned by tag and by digest (python:3.11.14-slim-bookworm, the multi-arch index).
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS router

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/home/qroute/.cache/huggingface \
    QROUTE_SERVER__BIND=0.0.0.0:50051 \
    QROUTE_SERVER__METRICS_HOST=0.0.0.0

# CPU-only torch first, in its own layer: it is by far the largest dependency
# and changes rarely, so source edits below do not invalidate it. Installing it
# before the project keeps pip from pulling the (much larger) CUDA build from
# PyPI when resolving the project's own torch requirement. The arguments are the
# Makefile's (scripts/pip-torch-args, their one owner).
COPY scripts/pip-torch-args /tmp/pip-torch-args
# The file holds several arguments: word splitting is what is wanted here.
# hadolint ignore=SC2046
RUN pip install $(grep -v '^#' /tmp/pip-torch-args) && rm /tmp/pip-torch-args

# Unprivileged runtime user, numeric so that a runtime (Kubernetes runAsNonRoot) can
# check it without reading /etc/passwd. Its Hugging Face cache directory is created
# here (owned by the user) so that a volume mounted on it starts with the right owner.
ARG QROUTE_UID=10001
RUN groupadd --gid "${QROUTE_UID}" qroute \
    && useradd --create-home --uid "${QROUTE_UID}" --gid "${QROUTE_UID}" \
        --shell /usr/sbin/nologin qroute \
    && mkdir -p /home/qroute/.cache/huggingface \
    && chown -R qroute:qroute /home/qroute/.cache

WORKDIR /app

# Only what the package build and the runtime need (see also .dockerignore).
# /app stays root-owned and read-only to the runtime user, except .qroute/
# (qroute's local state directory).
COPY pyproject.toml README.md ./
COPY qroute/ ./qroute/
COPY server/ ./server/
COPY indexer/ ./indexer/
COPY clients/python/qroute_client/ ./clients/python/qroute_client/
COPY proto/ ./proto/
COPY examples/ ./examples/

# The router's dependencies, plus onnxruntime for encoder.backend / nli.backend onnx and
# onnx-int8; scikit-learn and matplotlib are extras. (hadolint reads ".[onnx]" as an
# unpinned package: its pins come from pyproject.toml.)
# hadolint ignore=DL3013
RUN pip install ".[onnx]" \
    && rm -rf build ./*.egg-info \
    && mkdir -p /app/.qroute \
    && chown qroute:qroute /app/.qroute

USER 10001:10001

# 50051: gRPC API; 9100: Prometheus metrics.
EXPOSE 50051 9100

# SERVING once an index is published (NOT_SERVING before: the container is unhealthy
# until `qroute index` has run). The first start may download the models.
HEALTHCHECK --interval=15s --timeout=10s --start-period=120s --retries=5 \
    CMD ["qroute", "health", "--address", "127.0.0.1:50051"]

CMD ["qroute", "serve"]


# The index job: the router image plus the [index] extra (scikit-learn fits the linear
# head, index.head: true). No server runs here, so no health check.
FROM router AS indexer

USER 0:0
# The project itself, so its pins come from pyproject.toml (hadolint reads ".[index]" as
# an unpinned package).
# hadolint ignore=DL3013
RUN pip install ".[index]" \
    && rm -rf build ./*.egg-info
USER 10001:10001

HEALTHCHECK NONE
CMD ["qroute", "index", "/app/examples/queries.csv"]


# A plain `docker build .` builds the router.
FROM router
