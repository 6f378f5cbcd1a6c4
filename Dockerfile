# syntax=docker/dockerfile:1
# The flaggerpy controller image: `docker build -t flaggerpy:0.1.0 .`
# It runs `flaggerpy controller` as a non-root user; the Helm chart (charts/flaggerpy) passes
# Flagger's flags as args. The same image runs the load tester (`flaggerpy loadtester`), whose
# tasks may need more tools (hey, helm, kubectl) layered on top of it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: the project's wheel and the wheels of its dependencies --------------------------
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY flaggerpy/ flaggerpy/
COPY providers/ providers/
COPY metrics/ metrics/
COPY notifiers/ notifiers/
RUN pip wheel --wheel-dir /wheels .

# --- runtime: the wheels installed into a virtual environment, nothing else --------------------
FROM ${PYTHON_IMAGE}
ARG REVISION=unknown
LABEL org.opencontainers.image.title="flaggerpy" \
      org.opencontainers.image.description="Progressive delivery operator for Kubernetes, compatible with Flagger" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${REVISION}"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/flaggerpy/bin:$PATH \
    FLAGGERPY_REVISION=${REVISION}
# --no-index: only the wheels the builder made, so the image holds exactly what was resolved there.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/flaggerpy \
    && /opt/flaggerpy/bin/pip install --no-index --find-links=/wheels /wheels/*.whl \
    && groupadd --system --gid 10001 flaggerpy \
    && useradd --system --uid 10001 --gid flaggerpy --home-dir /tmp --shell /usr/sbin/nologin flaggerpy
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["flaggerpy"]
CMD ["controller"]
