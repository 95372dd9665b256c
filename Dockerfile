# syntax=docker/dockerfile:1
# The Greenlight operator image: `greenlight operator` (the chart passes args ["operator"]).
# Build: docker build -t greenlight:dev .
# Runs as uid 65532 on a read-only root filesystem: bytecode is compiled at build time and nothing
# is written outside the mounted volumes (/tmp, the audit log, the webhook certificate).

FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

FROM python:3.11-slim AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/greenlight
WORKDIR /src
# Dependencies first (from the lock file), so code changes reuse the cached layer.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
# The wheel leaves out greenlight.devcluster (pyproject.toml): the image has no dev tooling.
COPY operator ./operator
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim
LABEL org.opencontainers.image.title="greenlight" \
      org.opencontainers.image.description="Kubernetes-native human approval gate (operator and CLI)" \
      org.opencontainers.image.source="https://github.com/greenlight-dev/greenlight" \
      org.opencontainers.image.licenses="Apache-2.0"
# The virtualenv's interpreter links to /usr/local/bin/python3.11, present in both stages.
COPY --from=build /opt/greenlight /opt/greenlight
ENV PATH=/opt/greenlight/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 9090 8080 9443 3000
ENTRYPOINT ["greenlight"]
CMD ["operator"]
