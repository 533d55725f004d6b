# syntax=docker/dockerfile:1
# The cloud server image: the runtime and the cloud extra (scipy for every scheduler), amd64 or
# arm64, from the repository root:
#
#   docker buildx build -f deploy/docker/cloud.Dockerfile -t ecd-cloud .
#
# Its registry is a SQLite file in /var/lib/ecd (mount a volume there); more than one replica needs
# the PostgreSQL registry (--db postgresql://...).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm
LABEL org.opencontainers.image.title="ecd-cloud" \
      org.opencontainers.image.description="ECD Runtime: cloud server (registry, schedulers, last blocks and task heads)"
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/ecd --create-home --shell /usr/sbin/nologin ecd
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ecd ./ecd
COPY ecd_cli ./ecd_cli
COPY device_agent ./device_agent
COPY edge_node ./edge_node
COPY cloud_server ./cloud_server
COPY scheduling ./scheduling
COPY models ./models
COPY research ./research
# The versions are pyproject.toml's ranges (the project has no lock file); dependencies from wheels only.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --only-binary=:all: '.[cloud]' \
    && rm -rf /src/build \
    && ecd --help > /dev/null
ENV PYTHONUNBUFFERED=1 \
    ECD_MODEL_DIR=/var/lib/ecd/models \
    ECD_CLOUD_HOST=0.0.0.0 \
    ECD_CLOUD_PORT=50051 \
    ECD_CLOUD_METRICS_PORT=9100 \
    ECD_CLOUD_DB=/var/lib/ecd/cloud.sqlite3 \
    ECD_CLOUD_TLS_DIR=/etc/ecd/tls \
    ECD_CLOUD_HEALTH_PORT=50052 \
    ECD_CLOUD_REFLECTION=false
USER 10001:10001
WORKDIR /var/lib/ecd
VOLUME ["/var/lib/ecd"]
# 50051: gRPC over mutual TLS (devices register, edge nodes stream; certificates from `ecd certs init`,
# mounted at /etc/ecd/tls); 50052: plaintext gRPC health only, for probes; 9100: Prometheus metrics.
EXPOSE 50051 50052 9100
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "from ecd.transport.rpc import wait_healthy; wait_healthy('127.0.0.1:50052', 4)"]
ENTRYPOINT ["ecd"]
CMD ["cloud-server"]
