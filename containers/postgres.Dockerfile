# PostgreSQL 15 from Debian's archive on the offline base image (no registry needed).
ARG BASE=conveyor/python-base:3.11
FROM ${BASE}
USER root
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data
USER postgres
ENV PGDATA=/var/lib/postgresql/data
# First start: create the cluster and the `conveyor` database (trust inside the compose network).
CMD ["sh", "-c", "test -s $PGDATA/PG_VERSION || { /usr/lib/postgresql/15/bin/initdb -A trust -U postgres -D $PGDATA && echo \"listen_addresses='*'\" >> $PGDATA/postgresql.conf && echo 'host all all 0.0.0.0/0 trust' >> $PGDATA/pg_hba.conf && /usr/lib/postgresql/15/bin/pg_ctl -D $PGDATA -w start && createdb conveyor && /usr/lib/postgresql/15/bin/pg_ctl -D $PGDATA -w stop; } && exec /usr/lib/postgresql/15/bin/postgres -D $PGDATA"]
