# syntax=docker/dockerfile:1
# The flaggerpy controller image: `make image` (podman, on a Debian base built by e2e/images.py),
# or `docker build -t flaggerpy:0.1.0 .` on the python:3.11-slim default. It runs
# `flaggerpy controller` as a non-root user; the Helm chart (charts/flaggerpy) passes Flagger's
# flags as args. The same image runs the load tester (`flaggerpy loadtester`); Dockerfile.loadtester
# layers the tools its tasks call (hey, ghz, helm, kubectl, wrk) on top of it.

# Both stages must run the same Python at the same path: the runtime copies the builder's venv.
ARG BUILDER_IMAGE=python:3.11-slim-bookworm
ARG RUNTIME_IMAGE=python:3.11-slim-bookworm

# --- builder: the project and its dependencies installed into a virtual environment ------------
FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY flaggerpy/ flaggerpy/
COPY providers/ providers/
COPY metrics/ metrics/
COPY notifiers/ notifiers/
# An optional build secret `cacert` (a CA bundle) lets pip reach the package index through a
# TLS-intercepting proxy: `podman build --secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt`.
# pip's cache is a cache mount (outside every layer), so a source change re-downloads nothing.
# pip is removed afterwards, so the runtime image holds no installer or build tool, and so are
# numpy's and scipy's own test suites (50 MB, never imported). pip has compiled the bytecode,
# which a read-only root filesystem could not write at run time.
RUN --mount=type=secret,id=cacert --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
    && python3 -m venv /opt/flaggerpy \
    && /opt/flaggerpy/bin/pip install . \
    && /opt/flaggerpy/bin/pip uninstall --yes pip setuptools \
    && find /opt/flaggerpy/lib/python3*/site-packages/numpy /opt/flaggerpy/lib/python3*/site-packages/scipy \
         -type d -name tests -prune -exec rm -rf {} +

# --- runtime: the venv and a numeric non-root user, nothing else ------------------------------
FROM ${RUNTIME_IMAGE}
ARG REVISION=unknown
LABEL org.opencontainers.image.title="flaggerpy" \
      org.opencontainers.image.description="Progressive delivery operator for Kubernetes, compatible with Flagger" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${REVISION}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PATH=/opt/flaggerpy/bin:$PATH \
    FLAGGERPY_REVISION=${REVISION}
COPY --from=builder /opt/flaggerpy /opt/flaggerpy
# A passwd entry without useradd (a minimal Debian base has none): tools that look the user up
# (Python's getpass, ssh, git) find a name and a home; /tmp is the only writable place needed.
RUN echo 'flaggerpy:x:10001:10001:flaggerpy:/tmp:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'flaggerpy:x:10001:' >> /etc/group
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["flaggerpy"]
CMD ["controller"]
