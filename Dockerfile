# syntax=docker/dockerfile:1
# ServiceRadar Core image.
#
#   docker build -t serviceradar-core .
#   docker run -p 50051:50051 -p 9464:9464 -v srcore-data:/var/lib/srcore serviceradar-core
#
# Settings come from SRCORE_* variables (see docs/configuration.md), e.g. SRCORE_DATABASE_URL,
# SRCORE_ETCD_ENDPOINTS, SRCORE_NATS_URL, SRCORE_TLS_CERT/KEY/CLIENT_CA.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder: wheels only
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# .dockerignore admits only what the wheel needs (pyproject, README, core, cli, gen).
COPY . .
# The project's wheel plus every runtime dependency as wheels, so the runtime stage installs
# offline and carries no build tooling.
RUN pip wheel --wheel-dir /wheels .

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="serviceradar-core" \
      org.opencontainers.image.description="ServiceRadar Core: the gRPC control plane edge cores dial into over mutual TLS" \
      org.opencontainers.image.licenses="Apache-2.0"

# Metrics default to 127.0.0.1, unreachable from outside a container; EXPOSE 9464 needs this.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SRCORE_METRICS_LISTEN=0.0.0.0:9464

RUN groupadd --system --gid 10001 srcore \
 && useradd --system --uid 10001 --gid srcore --home-dir /var/lib/srcore --no-create-home \
        --shell /usr/sbin/nologin srcore \
 && install -d -o srcore -g srcore -m 0750 /var/lib/srcore

# Bind-mounted rather than COPY'd, so the wheels never become an image layer. No version pin:
# --no-index leaves exactly the wheel built above to choose from.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels serviceradar-core

USER 10001:10001
WORKDIR /var/lib/srcore
VOLUME ["/var/lib/srcore"]

# 50051: gRPC (edge and admin, mTLS); 9464: Prometheus /metrics.
EXPOSE 50051 9464

# The replica's own gRPC health service over mTLS, with the material under the data dir
# (probes 127.0.0.1:50051). Change --data-dir here too if CMD is given another one.
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=3 \
    CMD ["srcore", "healthcheck", "--data-dir", "/var/lib/srcore"]

# srcore drains on SIGTERM for SRCORE_GRACE_PERIOD (10s); give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["srcore"]
CMD ["serve", "--data-dir", "/var/lib/srcore", "--listen", "0.0.0.0:50051"]
