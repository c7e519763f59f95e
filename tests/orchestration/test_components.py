"""The adapter layer's parts on their own, as the SFTP provider tests its own: a sensor's ``poke()``
against its hook and the real project database, each trigger's ``serialize()`` round trip, the
hooks that fill the plain connection, the one translation of permanent errors. No scheduler."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from airflow.sdk.exceptions import AirflowFailException

from tests.retention.helpers import ACTOR, signed_protocol
from welfare_exchange import connections
from welfare_exchange.db import session_scope
from welfare_exchange.errors import AgencySideError, InputError, ProtocolError
from welfare_exchange.orchestration.hooks import AirflowHooks
from welfare_exchange.orchestration.hooks.project_db import ProjectDbHook
from welfare_exchange.orchestration.sensors.protocol_gate import ProtocolGateSensor
from welfare_exchange.orchestration.tasks import permanent_errors_fail
from welfare_exchange.orchestration.triggers.mail_arrival import MailArrivalTrigger
from welfare_exchange.orchestration.triggers.protocol_gate import ProtocolGateTrigger
from welfare_exchange.orchestration.triggers.request_arrival import RequestArrivalTrigger
from welfare_exchange.protocols import create, transition

ON = dt.date(2026, 11, 2)
CONTEXT = {"logical_date": dt.datetime(2026, 11, 2, 8, tzinfo=dt.timezone.utc)}


def _draft(nis: str = "99902") -> int:
    with session_scope() as session:
        return create(
            session, nis_code=nis, municipality=f"Testgemeente {nis}", kind="method1", channel="sftp",
            key_connection=f"key_{nis}", college_decision_ref="CB/2026/1", college_decision_date=dt.date(2026, 9, 1),
            dpo_advice_date=dt.date(2026, 9, 15), actor=ACTOR,
        ).id


def _round_trip(trigger):
    path, kwargs = trigger.serialize()
    stored = json.loads(json.dumps(kwargs))  # the triggerer keeps them as JSON
    module, _, name = path.rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    assert cls is type(trigger)
    again = cls(**stored)
    assert again.serialize() == (path, stored)
    return stored


# ----------------------------------------------------------------------------------- sensors


def test_the_gate_sensor_pokes_the_registry_through_its_hook(sqlite_db):
    pid = _draft()
    sensor = ProtocolGateSensor(task_id="protocol_gate", protocol_id=pid, requirements={"kind": "method1", "channel": "sftp"})
    assert sensor.poke(CONTEXT) is False  # a draft: wait
    with session_scope() as session:
        for action in ("submit", "advise", "sign"):
            transition(session, pid, action, actor=ACTOR, on=dt.date(2026, 10, 1))
    assert sensor.poke(CONTEXT) is True
    with session_scope() as session:
        transition(session, pid, "revoke", actor=ACTOR, on=dt.date(2026, 10, 2))
    with pytest.raises(AirflowFailException, match="protocol gate closed"):
        sensor.poke(CONTEXT)  # revoked: fails without retries, nothing read or sent


def test_the_gate_sensor_refuses_a_channel_the_protocol_does_not_allow(sqlite_db):
    pid = signed_protocol()
    sensor = ProtocolGateSensor(task_id="protocol_gate", protocol_id=pid, requirements={"kind": "method1", "channel": "smime"})
    with pytest.raises(AirflowFailException, match="allows channel sftp, not smime"):
        sensor.poke(CONTEXT)


# ------------------------------------------------------------------------------------- hooks


def test_the_project_db_hook_answers_the_gate(sqlite_db):
    pid = signed_protocol()
    assert ProjectDbHook().gate_decision(pid, ON, kind="method1").state == "open"
    assert ProjectDbHook().gate_decision(pid, ON, kind="method2").state == "closed"


def test_the_airflow_hooks_fill_the_plain_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KEY_99903", json.dumps({
        "conn_type": "generic", "host": "files.example", "port": 2222, "login": "agency",
        "password": "generated-in-test", "extra": {"from_email": "agency@example.test"},
    }))
    found = AirflowHooks().connection("key_99903")
    assert isinstance(found, connections.Connection)
    assert (found.host, found.port, found.login, found.password) == ("files.example", 2222, "agency", "generated-in-test")
    assert found.extra == {"from_email": "agency@example.test"}
    assert "generated-in-test" not in repr(found)  # a secret never lands in a log line
    with pytest.raises(connections.ConnectionNotFound):
        AirflowHooks().connection("no_such_connection_99903")
    assert connections.find("no_such_connection_99903") is None  # the installed reader is the same


def test_the_logic_reads_connections_only_through_the_installed_reader(monkeypatch):
    class Fixed:
        def connection(self, conn_id):
            return connections.Connection(conn_id, password="from-another-reader")

    monkeypatch.setattr(connections, "_installed", Fixed())
    assert connections.get("key_x").password == "from-another-reader"
    monkeypatch.setattr(connections, "_installed", None)
    with pytest.raises(connections.ConnectionNotFound, match="no connection reader is installed"):
        connections.get("key_x")


# ---------------------------------------------------------------------------------- triggers


def test_the_gate_trigger_round_trips_and_fires_open(sqlite_db):
    pid = signed_protocol()
    trigger = ProtocolGateTrigger(pid, ON.isoformat(), {"kind": "method1", "channel": "sftp"}, poke_interval=0.1)
    assert _round_trip(trigger) == {"protocol_id": pid, "on": "2026-11-02", "requirements": {"kind": "method1", "channel": "sftp"},
                                    "poke_interval": 0.1}

    async def first():
        return await asyncio.wait_for(trigger.run().__anext__(), timeout=20)

    assert asyncio.run(first()).payload["status"] == "open"


def test_the_mail_arrival_trigger_round_trips():
    stored = _round_trip(MailArrivalTrigger("gemeente@example.test", "imap_agency", poke_interval=30))
    assert stored == {"sender_address": "gemeente@example.test", "imap_conn_id": "imap_agency", "poke_interval": 30}


def test_the_request_arrival_trigger_round_trips():
    stored = _round_trip(RequestArrivalTrigger("sftp_44021", "2026-11-29T10:00:00+00:00", "2026-11-30T10:00:00+00:00",
                                               settle_seconds=10, poke_interval=60, max_bytes=1000))
    assert stored["sftp_conn_id"] == "sftp_44021" and stored["max_bytes"] == 1000


# ------------------------------------------------------------------------- the task wrapper


@pytest.mark.parametrize("error", [InputError("bad file"), ProtocolError("revoked")])
def test_an_error_no_retry_can_fix_fails_the_task_at_once(error):
    with pytest.raises(AirflowFailException, match=str(error)):
        with permanent_errors_fail():
            raise error


def test_any_other_error_is_left_to_the_retries():
    with pytest.raises(AgencySideError):
        with permanent_errors_fail():
            raise AgencySideError("disk full")
    with pytest.raises(OSError):
        with permanent_errors_fail():
            raise OSError("connection reset")
