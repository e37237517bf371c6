# The conveyor image for docker-compose: conveyor with every integration, on the offline base image
# (or any Python 3.11+ image: --build-arg BASE=python:3.11-slim). It serves as the Prefect server
# (`prefect server start`) and as the worker that serves the schedules (`conveyor serve`).
ARG BASE=conveyor/python-base:3.11
FROM ${BASE}
USER root
COPY pyproject.toml README.md /opt/conveyor-src/
COPY src /opt/conveyor-src/src
COPY containers/step.Dockerfile /opt/conveyor-src/containers/step.Dockerfile
RUN python3 -m venv /opt/conveyor \
    && /opt/conveyor/bin/pip install --no-cache-dir "/opt/conveyor-src[all]" \
    && mkdir -p /project/.conveyor /home/conveyor/.cache \
    && chown -R 1000:1000 /project /home/conveyor
ENV PATH=/opt/conveyor/bin:$PATH \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false
WORKDIR /project
USER 1000
CMD ["conveyor", "serve"]
