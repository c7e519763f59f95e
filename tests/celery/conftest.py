"""The distributed set-up: Airflow on PostgreSQL with the CeleryExecutor, Redis as broker, and a
real ``airflow celery worker`` process — all on this machine's servers, on loopback.

* ``celery_airflow`` (function): a fresh Airflow metadata database on PostgreSQL
  (``create_pg_database()``, migrated by ``airflow db migrate``), the Celery result backend in
  it, Redis db :data:`REDIS_DB` as broker, the four Airflow components
  (:class:`~welfare_exchange.devtools.airflow_server.AirflowServer`) plus one Celery worker, or
  several with their own environments (``worker_env``: e.g. each its own staging folder, as on
  separate hosts).
  A queue of its own (``wx_test_<random>``) keeps parallel test sessions on the same Redis
  from taking each other's tasks. Dropped and cleaned at teardown.
* ``sqlite_db`` is overridden here to be **PostgreSQL**: the Method 1 set-up of the exchange
  tests (``method1``, reused as is) puts its project database on the real server, as in
  production.

Redis or PostgreSQL unreachable: the test fails (never skips), saying which.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field

import pytest
import redis
import sqlalchemy as sa

from tests.exchange.conftest import method1  # noqa: F401 (the Method 1 set-up, reused)
from tests.fixtures.db import create_pg_database, drop_pg_database
from welfare_exchange.devtools.airflow_server import AirflowServer

REDIS_URL = os.environ.get("WELFARE_EXCHANGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
REDIS_DB = int(REDIS_URL.rsplit("/", 1)[-1])


@pytest.fixture
def sqlite_db(postgres_db):
    """In this folder the Method 1 set-up's project database is PostgreSQL (see module doc)."""
    return postgres_db


def require_redis() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as err:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({type(err).__name__}): start it (apt-get install redis-server)")
    return client


@dataclass
class CeleryAirflow:
    """A running distributed Airflow: ``server`` (REST helpers), the worker process, the queue."""

    server: AirflowServer
    worker: subprocess.Popen
    queue: str
    metadata_url: str
    #: Every worker process, ``worker`` first (``workers=`` of ``start``).
    workers: list[subprocess.Popen] = field(default_factory=list)

    def worker_log(self, index: int = 0) -> str:
        suffix = "" if index == 0 else f"-{index}"
        return (self.server.process_log_dir / f"celery-worker{suffix}.log").read_text(errors="replace")


def _stop_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    # SIGTERM is Celery's warm shutdown (finish running tasks); then SIGKILL the group.
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def celery_airflow(tmp_path_factory, request):
    """``start(dags_folder, env=None, worker_env=None) -> CeleryAirflow``; everything is stopped and dropped at teardown."""
    broker = require_redis()
    metadata_url = create_pg_database()  # fails the test when PostgreSQL is down
    url = sa.engine.make_url(metadata_url)
    queue = f"wx_test_{uuid.uuid4().hex[:10]}"
    started: list[CeleryAirflow] = []

    def start(dags_folder, env: dict | None = None, timeout: float = 300,
              worker_env: list[dict] | None = None, broker_url: str | None = None) -> CeleryAirflow:
        """``worker_env``: one worker per entry, each with these variables on top (default: one
        worker); ``broker_url``: another Redis than the shared one (one the test may restart)."""
        home = tmp_path_factory.mktemp("airflow-celery")
        backend = url.set(drivername="postgresql").render_as_string(hide_password=False)
        server = AirflowServer(home=home, env={
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__CELERY__BROKER_URL": broker_url or REDIS_URL,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{backend}",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            **(env or {}),
        })
        server.start(timeout=timeout)
        processes = []
        for index, extra in enumerate(worker_env or [{}]):
            suffix = "" if index == 0 else f"-{index}"
            log = open(server.process_log_dir / f"celery-worker{suffix}.log", "ab")
            processes.append(subprocess.Popen(
                [shutil.which("airflow", path=server.environment()["PATH"]), "celery", "worker",
                 "--queues", queue, "--concurrency", "2", "--celery-hostname", f"{queue}-{index}@%h",
                 # The worker's log server would listen on every interface: task logs are read
                 # from the shared folder instead (as for the scheduler, see AirflowServer).
                 "--skip-serve-logs", "--without-gossip", "--without-mingle"],
                env={**server.environment(), **extra}, cwd=home, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            ))
            log.close()
        cluster = CeleryAirflow(server=server, worker=processes[0], queue=queue, metadata_url=metadata_url,
                                workers=processes)
        started.append(cluster)
        deadline = time.monotonic() + 90
        for index, worker in enumerate(processes):
            while "ready" not in cluster.worker_log(index):
                if worker.poll() is not None or time.monotonic() > deadline:
                    server.stop()
                    raise AssertionError(f"the Celery worker {index} did not start:\n{cluster.worker_log(index)[-3000:]}")
                time.sleep(0.5)
        return cluster

    yield start
    for cluster in started:
        for worker in cluster.workers:
            _stop_group(worker)
        cluster.server.stop()
    with contextlib.suppress(redis.RedisError):
        # The queue, its priority lanes and kombu's bindings: every key named after our queue.
        for key in list(broker.scan_iter(match=f"*{queue}*")):
            broker.delete(key)
    from welfare_exchange.db.engine import dispose_engines

    dispose_engines()
    drop_pg_database(metadata_url)
