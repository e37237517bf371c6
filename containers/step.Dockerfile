# syntax=docker/dockerfile:1
# A step environment: the base image plus one uv virtual environment at /opt/conveyor/env,
# synced from a lock file. conveyor builds one image per environment key and tags it
# `conveyor-env:<key>`; project code, conveyor's runtime and artifacts are mounted at run time,
# never baked in, so editing code never rebuilds an image.
#
# Build context (written by conveyor.runners.images): `requirements.lock` and `tools/`, which
# holds the host's `uv` binary when it can run inside the image (a Linux host of the same
# architecture); otherwise uv is installed with pip in the throwaway stage.
ARG BASE_IMAGE

# ---- install stage: has uv; only the finished environment leaves it ----------------------
FROM ${BASE_IMAGE} AS install
ARG ENV_KEY
# The codec modules the executor will import (pandas, pyarrow, numpy, joblib): a lock that
# installs but cannot import them fails the build, so a bad pin set fails at plan time.
ARG IMPORT_CHECK_MODULES=""
# Marks this stage's image so conveyor can delete it after the build (the legacy builder keeps
# every stage's image; nothing reuses it because the final image is found by its key).
LABEL conveyor.build-stage=${ENV_KEY}
USER root
# UV_COMPILE_BYTECODE: steps run with PYTHONDONTWRITEBYTECODE on a read-only image layer, so
# without .pyc files every container would compile its packages again (pandas: seconds).
ENV UV_NO_CACHE=1 UV_LINK_MODE=copy UV_SYSTEM_CERTS=1 UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1
COPY tools/ /opt/conveyor-tools/
COPY requirements.lock /opt/conveyor/requirements.lock
RUN set -eu; \
    uv=/opt/conveyor-tools/uv; \
    if [ ! -x "$uv" ]; then \
        python3 -m venv /opt/conveyor-tools/venv; \
        /opt/conveyor-tools/venv/bin/pip install --quiet --disable-pip-version-check uv; \
        uv=/opt/conveyor-tools/venv/bin/uv; \
    fi; \
    "$uv" venv --quiet --python "$(command -v python3)" /opt/conveyor/env; \
    "$uv" pip sync --python /opt/conveyor/env/bin/python /opt/conveyor/requirements.lock; \
    if [ -n "$IMPORT_CHECK_MODULES" ]; then \
        /opt/conveyor/env/bin/python -I /opt/conveyor-tools/import_check.py $IMPORT_CHECK_MODULES; \
    fi

# ---- the step image: base + the environment, nothing else -------------------------------
FROM ${BASE_IMAGE}
COPY --from=install /opt/conveyor /opt/conveyor
ENV PATH=/opt/conveyor/env/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/conveyor/env \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 1000:1000
