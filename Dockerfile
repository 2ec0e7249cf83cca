# SomaBrain service image: one image, two apps.
#   docker run IMAGE            -> `somabrain api`    on :9696
#   docker run IMAGE memory     -> `somabrain memory` on :9595
#
# BASE_IMAGE must be a Debian-like image with python3 and python3-venv (python:3.13-slim by default; the
# air-gapped build passes a local debootstrap bookworm image with Python 3.11). Only `python3` is used.
#
# Intercepted HTTPS (corporate proxy): pass the CA bundle as an optional BuildKit secret, e.g.
#   DOCKER_BUILDKIT=1 docker build --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt .
# The bundle is mounted only while pip runs and never lands in a layer. Without the secret pip uses the
# base image's CA store.
# checkov:skip=CKV_DOCKER_7:FROM uses ${BASE_IMAGE}, whose default python:3.13-slim is a pinned version tag
ARG BASE_IMAGE=python:3.13-slim

# ---------------------------------------------------------------------------------------------------
# builder: a virtualenv in /opt/venv with the dependencies, then the project itself.
# ---------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/venv

# Dependencies first (read from pyproject's [project].dependencies), so a code change does not
# reinstall jax and friends. tomllib is in the standard library from Python 3.11.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip_ca,required=false \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca REQUESTS_CA_BUNDLE=/run/secrets/pip_ca; fi \
    && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
       > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project: installs the `brain` package and the `somabrain` console script into the venv.
# KEEP_PIP=1 keeps pip in the venv (the Tilt dev loop pip-installs into the running container); release
# images drop it, so the runtime stage has no package installer.
ARG KEEP_PIP=0
COPY README.md ./
COPY brain ./brain
RUN --mount=type=secret,id=pip_ca,required=false \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca REQUESTS_CA_BUNDLE=/run/secrets/pip_ca; fi \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/venv/bin/python3 -m compileall -q /opt/venv/lib \
    && /opt/venv/bin/somabrain --help > /dev/null \
    && if [ "$KEEP_PIP" != 1 ]; then /opt/venv/bin/python3 -m pip uninstall --yes --quiet pip; fi

# ---------------------------------------------------------------------------------------------------
# runtime: the base image plus /opt/venv. No compiler, no pip cache, no source tree.
# ---------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SOMABRAIN_JOURNAL_DIR=/var/lib/somabrain/outbox \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus-multiproc \
    SOMABRAIN_HEALTHCHECK_URL=http://127.0.0.1:9696/healthz

# uid/gid 10001: fixed, so k8s runAsUser/fsGroup and compose volumes agree with the image.
# The two writable directories are created here and owned by that user; everything else stays
# read-only, so the container also runs with a read-only root filesystem.
RUN groupadd --system --gid 10001 somabrain \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin somabrain \
    && mkdir -p /var/lib/somabrain/outbox /tmp/prometheus-multiproc \
    && chown -R 10001:10001 /var/lib/somabrain /tmp/prometheus-multiproc

# The venv is root-owned (read-only for the service user) unless VENV_OWNER says otherwise: the Tilt dev
# loop builds with VENV_OWNER=10001 so live_update can sync code and pip-install into it.
ARG VENV_OWNER=0
COPY --from=builder --chown=${VENV_OWNER}:${VENV_OWNER} /opt/venv /opt/venv

USER 10001:10001
WORKDIR /var/lib/somabrain
EXPOSE 9696 9595

# Slim images have no curl: probe with python3's urllib. urlopen raises on connection errors and on
# non-2xx answers, so the exit status is the health. `somabrain memory` serves /health on 9595: set
# SOMABRAIN_HEALTHCHECK_URL=http://127.0.0.1:9595/healthz for it (compose does).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['SOMABRAIN_HEALTHCHECK_URL'], timeout=4)"]

ENTRYPOINT ["somabrain"]
CMD ["api"]
