# syntax=docker/dockerfile:1
# orchestrator: a daemon that drives LLM Batch APIs. Multi-stage: build a venv, copy it to a slim
# runtime that runs as a non-root user with /data for the ledger and results.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python3 -m venv /opt/venv
# Dependencies first (cached while only the code changes).
COPY pyproject.toml README.md ./
RUN mkdir orchestrator && touch orchestrator/__init__.py \
    && /opt/venv/bin/pip install . \
    && /opt/venv/bin/pip uninstall -y orchestrator
COPY orchestrator ./orchestrator
COPY migrations ./migrations
RUN /opt/venv/bin/pip install --no-deps .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 orchestrator \
    && useradd --system --uid 10001 --gid orchestrator --home-dir /data --no-create-home orchestrator \
    && mkdir -p /data /etc/orchestrator && chown orchestrator:orchestrator /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 ORCH_CONFIG=/etc/orchestrator/config.toml
USER orchestrator
WORKDIR /data
VOLUME ["/data"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["orchestrator"]
CMD ["run", "--migrate"]
