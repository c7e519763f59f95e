"""Redis restarted under Celery: no gap in the audit trail, the exchange delivered exactly once.

The broker is a Redis server of the test's own (no persistence: a restart loses what was queued
in it, the worst case), so the shared Redis other tests use is never touched. Queued tasks whose
message was lost are sent again by the scheduler after ``task_queued_timeout`` (30 s here).
Recovery time (Redis back → run done) is printed, not asserted. Slow (~2–4 min on 2 cores).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time

import pytest
import redis

from tests.exchange.faults import (
    LOGICAL,
    STEPS_AFTER_FETCH,
    airflow_env,
    assert_delivered_once_and_every_try_accounted,
    upload_and_snapshot,
    wait_until_running,
)
from welfare_exchange.devtools.airflow_server import free_port
from welfare_exchange.settings import REPO_ROOT


class PrivateRedis:
    def __init__(self, folder) -> None:
        self.port, self.folder, self.proc = free_port(), folder, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("the test's own redis-server did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.sftp
def test_redis_restarted_under_celery_leaves_no_gap(method1, celery_airflow, private_redis, monkeypatch):
    dag_id = upload_and_snapshot(method1, monkeypatch)
    cluster = celery_airflow(REPO_ROOT / "dags", broker_url=private_redis.url,
                             env=airflow_env(AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT="30"))
    af = cluster.server
    af.wait_for_dag(dag_id, timeout=180)
    af.unpause(dag_id)
    run_id = af.trigger(dag_id, logical_date=LOGICAL)
    ti = wait_until_running(af, dag_id, run_id, STEPS_AFTER_FETCH)
    private_redis.stop()  # killed: everything queued in it is lost
    time.sleep(3)
    private_redis.start()
    back = time.monotonic()
    assert_delivered_once_and_every_try_accounted(method1, af, dag_id, run_id, faulted=f"Redis restarted during {ti['task_id']}",
                                                  require_retry=False)
    print(f"recovery: run done {time.monotonic() - back:.1f} s after Redis was back")
