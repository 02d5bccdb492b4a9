# syntax=docker/dockerfile:1
#
# qroute: gRPC query-domain router.
#
#   docker build -t qroute .
#   docker run --rm -p 50051:50051 -p 9100:9100 qroute
#
# See docker-compose.yml for the full stack (router + Qdrant + one-shot indexer).

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# CPU-only torch first, in its own layer: it is by far the largest dependency
# and changes rarely, so source edits below do not invalidate it. Installing it
# before the project keeps pip from pulling the (much larger) CUDA build from
# PyPI when resolving the project's own torch requirement.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# Unprivileged runtime user. Its Hugging Face cache directory is created here
# (owned by the user) so that a named volume mounted on it, as docker-compose.yml
# does, is initialised with the right ownership instead of root's.
ARG QROUTE_UID=10001
RUN useradd --create-home --uid "${QROUTE_UID}" --user-group --shell /usr/sbin/nologin qroute \
    && mkdir -p /home/qroute/.cache/huggingface \
    && chown -R qroute:qroute /home/qroute/.cache
ENV HF_HOME=/home/qroute/.cache/huggingface

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

RUN pip install . \
    && rm -rf build *.egg-info \
    && mkdir -p /app/.qroute \
    && chown qroute:qroute /app/.qroute

USER qroute

# 50051: gRPC API; 9100: Prometheus metrics.
EXPOSE 50051 9100

CMD ["qroute", "serve"]
