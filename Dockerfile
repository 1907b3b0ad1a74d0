# One image for the operator (the entry point) and the monitoring sidecar (`mlmodel-monitor`,
# which the operator sets as the sidecar's command).
#
#   docker build -t ghcr.io/mlmodel-operator/mlmodel-operator:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the package and its dependencies in a virtualenv ---------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# With the fetch extra: the image is also the model fetcher, the init container of model pods.
RUN /opt/venv/bin/pip install --no-cache-dir "/src[fetch]"

# --- final: the virtualenv on a clean base, no build tools ---------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="mlmodel-operator" \
      org.opencontainers.image.description="Kubernetes operator for MLModelDeployment, and its model monitoring sidecar" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/mlmodel-operator/mlmodel-operator"
# A named user for the numeric UID the chart runs as: libraries that look the user up (getpass)
# find one, and the image runs non-root under a plain `docker run` too.
RUN groupadd --gid 65532 mlmodel \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mlmodel
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["mlmodel-operator"]
