# syntax=docker/dockerfile:1
# The runtime image: a device agent or an edge node (numpy, onnxruntime, grpcio, ...; no torch, no
# scipy). One file for arm64 (Raspberry Pi 4/5, 64-bit OS) and amd64, from the repository root:
#
#   docker buildx build --platform linux/arm64,linux/amd64 -f deploy/docker/runtime.Dockerfile -t ecd-runtime .
#
# The wheel is pure Python, so it is built once on the build machine's own platform; only the
# install runs on the target platform, from prebuilt wheels (--only-binary=:all:, nothing compiles).
ARG PYTHON_VERSION=3.11

FROM --platform=$BUILDPLATFORM python:${PYTHON_VERSION}-slim-bookworm AS wheel
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
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim-bookworm
ARG TARGETARCH
LABEL org.opencontainers.image.title="ecd-runtime" \
      org.opencontainers.image.description="ECD Runtime: device agent and edge node (split inference, no torch)"
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/ecd --create-home --shell /usr/sbin/nologin ecd
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-cache-dir --only-binary=:all: /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && ecd --help > /dev/null
ENV PYTHONUNBUFFERED=1 \
    ECD_MODEL_DIR=/var/lib/ecd/models \
    ECD_EDGE_TLS_DIR=/etc/ecd/tls \
    ECD_EDGE_HEALTH_PORT=50062 \
    ECD_EDGE_REFLECTION=false \
    ECD_AGENT_TLS_DIR=/etc/ecd/tls
USER 10001:10001
WORKDIR /var/lib/ecd
# 50061: an edge node's gRPC port over mutual TLS (devices stream here); 50062: plaintext gRPC health
# only, for probes; 9101: its Prometheus metrics.
EXPOSE 50061 50062 9101
# gRPC health of an edge node; a device agent has no server and runs with the check disabled.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os; from ecd.transport.rpc import wait_healthy; wait_healthy('127.0.0.1:' + os.environ.get('ECD_EDGE_HEALTH_PORT', '50062'), 4)"]
ENTRYPOINT ["ecd"]
CMD ["edge-node", "--host", "0.0.0.0", "--port", "50061", "--metrics-port", "9101"]
