# syntax=docker/dockerfile:1
# orchestrator: a daemon that drives LLM Batch APIs (docs/operations.md explains every knob).
#
#   docker build -t orchestrator .
#   docker run -v ./config.toml:/etc/orchestrator/config.toml:ro -v orchestrator-data:/data \
#       -e MISTRAL_API_KEY -p 127.0.0.1:9464:9464 orchestrator
#
# Multi-stage: the build stage makes a virtualenv (dependencies in their own layer, cached while
# only the code changes); the runtime stage copies it onto the same slim base and runs it as a
# non-root user. Only `python3 -m venv` and the venv's own interpreter are used, never an
# absolute interpreter path, so any Python 3.11 base with venv works (the official
# python:3.11-slim keeps Python in /usr/local/bin, Debian's python3 in /usr/bin).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/venv
# Layer 1: the dependencies only, pinned with hashes in docker/requirements.lock (`make lock`
# regenerates it from pyproject.toml; asyncpg included, so a PostgreSQL ledger works as is).
# The image is then reproducible and a tampered download fails the build.
COPY docker/requirements.lock ./
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
# Layer 2: the application (its dependencies are already there).
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY migrations ./migrations
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/orchestrator --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="orchestrator" \
      org.opencontainers.image.description="Drives LLM providers' Batch APIs: budgeted, crash-safe, cheap to poll." \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 orchestrator \
    && useradd --system --uid 10001 --gid orchestrator --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin orchestrator \
    && mkdir -p /data /etc/orchestrator \
    && chown orchestrator:orchestrator /data
COPY --from=build /opt/venv /opt/venv
# ORCH_CONFIG: the config file is mounted here (read-only is fine; relative paths in it resolve
# against /etc/orchestrator, so point the ledger and results at /data).
# ORCH_HTTP_LISTEN: /healthz, /readyz and /metrics are always on in the container (the
# HEALTHCHECK needs them); it overrides [http] listen in the config file.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORCH_CONFIG=/etc/orchestrator/config.toml \
    ORCH_HTTP_LISTEN=0.0.0.0:9464
# Numeric, so Kubernetes runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 9464
# The probe reads ORCH_HTTP_LISTEN, so it follows a changed port; stdlib only, no curl needed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-m", "orchestrator.service.probe"]
# SIGTERM drains: no new uploads, creates or downloads; in-flight ones get [daemon]
# grace_period (default 30 s) before they are cut. Give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["orchestrator"]
CMD ["run", "--migrate"]
