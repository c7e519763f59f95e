# The welfare-exchange image: Apache Airflow 3.3.2 + the project, installed from the pinned lock.
#
# One image runs every Airflow component of docker-compose.yaml (api-server, scheduler,
# dag-processor, triggerer, Celery worker) and the one-shot init. It holds no secret: every
# key and password comes from the environment at run time (see .env.example).
#
#   docker build -t welfare-exchange:local .
#
# Two stages: the builder has a compiler for any dependency without a wheel; the runtime image
# only gets the finished virtualenv and the project's sources.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ----------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential libpq-dev \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first (own layer: rebuilt only when the lock changes). Every version is pinned
# by constraints.txt, the project's `pip freeze` lock, exactly like `make install`.
COPY requirements.txt constraints.txt /opt/welfare-exchange/src/
RUN pip install --upgrade pip \
 && pip install -r /opt/welfare-exchange/src/requirements.txt -c /opt/welfare-exchange/src/constraints.txt

# Then the project itself, the way the project installs it (`pip install --no-deps -e .`):
# the package in include/welfare_exchange, with its data files (municipalities.csv, the
# migrations) read from the source tree. The import check fails the build if the lock breaks
# the CeleryExecutor (the workers could not start) or the FAB auth manager (no one could log in).
COPY pyproject.toml /opt/welfare-exchange/src/
COPY include/ /opt/welfare-exchange/src/include/
RUN rm -rf /opt/welfare-exchange/src/include/*.egg-info \
 && pip install --no-deps -e /opt/welfare-exchange/src \
 && welfare-exchange --help > /dev/null \
 && python -c "import airflow, asyncpg, psycopg2, redis, welfare_exchange, airflow.providers.celery.executors.celery_executor_utils, airflow.providers.fab.auth_manager.fab_auth_manager"

# ----------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="welfare-exchange" \
      org.opencontainers.image.description="Groeipakket welfare-data exchange with Flemish municipalities (Apache Airflow 3.3.2)"

# tini reaps zombies and forwards signals (Celery warm shutdown, scheduler stop).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

ARG AIRFLOW_UID=50000
# Non-root user; group 0 so the image also runs under an arbitrary uid (OpenShift style).
RUN useradd --uid "${AIRFLOW_UID}" --gid 0 --home-dir /opt/airflow --no-create-home --shell /usr/sbin/nologin airflow

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    WELFARE_EXCHANGE_HOME=/opt/welfare-exchange/home \
    WELFARE_EXCHANGE_STAGING_DIR=/opt/welfare-exchange/staging \
    WELFARE_EXCHANGE_REGISTRY_SNAPSHOT=/opt/welfare-exchange/home/registry_snapshot.json

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/welfare-exchange/src /opt/welfare-exchange/src
# The runbook the Exchanges view links every failure to (served at /welfare-exchange/runbook).
COPY docs/RUNBOOK.md /opt/welfare-exchange/src/docs/RUNBOOK.md
COPY dags/ /opt/airflow/dags/
COPY plugins/ /opt/airflow/plugins/
COPY docker/airflow/ /opt/welfare-exchange/docker/
COPY docker/require-secrets.sh /usr/local/bin/

# Writable state lives in volumes mounted on these folders; creating them here gives a fresh
# named volume the right owner and mode (staging holds personal data, even if encrypted: 0700).
RUN mkdir -p /opt/airflow/logs /opt/welfare-exchange/home /opt/welfare-exchange/staging \
 && chown -R airflow:0 /opt/airflow/logs /opt/welfare-exchange/home /opt/welfare-exchange/staging \
 && chmod 0750 /opt/airflow/logs /opt/welfare-exchange/home \
 && chmod 0700 /opt/welfare-exchange/staging \
 && chmod 0755 /opt/welfare-exchange/docker/*.sh /usr/local/bin/require-secrets.sh

USER airflow
WORKDIR /opt/airflow
# Files a task writes (staging copies, logs) are private to the service user.
ENV UMASK=0077

EXPOSE 8080 8793 8794
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/welfare-exchange/docker/entrypoint.sh"]
CMD ["airflow", "version"]
