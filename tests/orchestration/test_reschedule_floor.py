"""Rescheduled pokes keep a floor between them, and the sensor's own timeout is the arrival
window closing: the two defences against Airflow 3.3's stale-executor-event race
(apache/airflow#71172) and against a window that closes between a look and its check."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSkipException

from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord
from welfare_exchange.orchestration.referral_dag import FeedbackArrivalSensor
from welfare_exchange.orchestration.sensors.arrival_window import ArrivalWindow
from welfare_exchange.orchestration.sensors.channel_arrival import ChannelArrivalSensor
from welfare_exchange.orchestration.sensors.protocol_gate import ProtocolGateSensor
from welfare_exchange.orchestration.sensors.request_arrival import RequestArrivalSensor

FLOOR = "WELFARE_EXCHANGE_RESCHEDULE_FLOOR_SECONDS"


def _sensors(mode: str):
    common = {"poke_interval": 1, "timeout": 600, "mode": mode}
    return [
        RequestArrivalSensor(task_id="a", protocol_id=1, sftp_conn_id="sftp_x", deferrable=False, **common),
        ChannelArrivalSensor(task_id="b", protocol_id=1, channel="folder", **common),
        ProtocolGateSensor(task_id="c", protocol_id=1, deferrable=False, **common),
        FeedbackArrivalSensor(task_id="d", protocol_id=1, **common),
    ]


def _next_interval(sensor) -> float:
    start = dt.datetime.now(dt.timezone.utc)
    return sensor._get_next_poke_interval(start, lambda: 1.0, 1)


def test_rescheduled_pokes_are_never_closer_than_the_floor(monkeypatch):
    monkeypatch.setenv(FLOOR, "15")
    for sensor in _sensors("reschedule"):
        assert _next_interval(sensor) == 15, type(sensor).__name__


def test_the_floor_leaves_longer_intervals_poke_mode_and_a_zero_floor_alone(monkeypatch):
    monkeypatch.setenv(FLOOR, "15")
    for sensor in _sensors("poke"):
        assert _next_interval(sensor) == 1, type(sensor).__name__
    slow = ChannelArrivalSensor(task_id="b", protocol_id=1, channel="folder", poke_interval=60, timeout=600,
                                mode="reschedule")
    assert _next_interval(slow) == 60
    monkeypatch.setenv(FLOOR, "0")
    for sensor in _sensors("reschedule"):
        assert _next_interval(sensor) == 1, type(sensor).__name__


def test_the_default_floor_is_well_above_the_supervisors_five_second_lag(monkeypatch):
    monkeypatch.delenv(FLOOR, raising=False)
    assert _next_interval(_sensors("reschedule")[0]) >= 15


class _NeverLooksAtTheClock(ArrivalWindow, BaseSensorOperator):
    """A request sensor whose look never checks the window: only BaseSensorOperator's timeout can end it."""

    awaited_in = "the test channel"

    def __init__(self, *, protocol_id: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.protocol_id = protocol_id

    def poke(self, context) -> bool:
        return False


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_the_sensors_own_timeout_ends_the_run_skipped_and_audited_never_failed(sqlite_db, mode):
    sensor = _NeverLooksAtTheClock(task_id="wait_for_request", protocol_id=7, mode=mode, timeout=0, poke_interval=0.01)
    run_id = f"manual__timeout_{mode}"
    ti = SimpleNamespace(dag_id="method1_test", run_id=run_id, task_id="wait_for_request", try_number=1, map_index=-1,
                         get_first_reschedule_date=lambda context: None)
    with pytest.raises(AirflowSkipException, match="no request arrived in the test channel between"):
        sensor.execute({"ti": ti, "task_reschedule_count": 0})
    with session_scope() as session:
        facts = session.scalars(sa.select(AuditRecord).where(AuditRecord.run_id == run_id)).all()
    assert [(f.action, f.outcome) for f in facts] == [("request.none_arrived", "skipped")]
