# The conveyor image for docker-compose: conveyor with every integration, on the offline base image
# (or any Python 3.11+ image: --build-arg BASE=python:3.11-slim). It serves as the Prefect server
# (`prefect server start`) and as the worker that serves the schedules (`conveyor serve`).
ARG BASE=conveyor/python-base:3.11
FROM ${BASE}
USER root
# Dependencies first, in a layer of their own (against a stub package): a change to conveyor's
# source then reinstalls conveyor alone. uv, not pip: its parallel downloads make a cold build
# minutes shorter; it verifies TLS against SSL_CERT_FILE, which the base image sets.
COPY pyproject.toml README.md /opt/conveyor-src/
COPY containers/step.Dockerfile /opt/conveyor-src/containers/step.Dockerfile
RUN python3 -m venv /opt/conveyor \
    && /opt/conveyor/bin/pip install --no-cache-dir --quiet "uv>=0.5,<0.14" \
    && mkdir -p /opt/conveyor-src/src/conveyor \
    && touch /opt/conveyor-src/src/conveyor/__init__.py \
    && /opt/conveyor/bin/uv pip install --python /opt/conveyor/bin/python --no-cache \
        --compile-bytecode "/opt/conveyor-src[all]"
COPY src /opt/conveyor-src/src
RUN /opt/conveyor/bin/uv pip install --python /opt/conveyor/bin/python --no-cache \
        --compile-bytecode --no-deps --reinstall-package conveyor /opt/conveyor-src \
    && mkdir -p /project/.conveyor /home/conveyor/.cache \
    && chown -R 1000:1000 /project /home/conveyor
ENV PATH=/opt/conveyor/bin:$PATH \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false
WORKDIR /project
USER 1000
CMD ["conveyor", "serve"]
