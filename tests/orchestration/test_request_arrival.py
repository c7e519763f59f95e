"""The SFTP arrival trigger: its serialisation, and its run() against the real OpenSSH server."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import time

import pytest

from tests.fixtures.sftp import hold_startup, own_sftp_server, release_when_logged
from welfare_exchange.transport import sftp as transport
from welfare_exchange.orchestration.triggers.request_arrival import RequestArrivalTrigger

pytestmark = pytest.mark.sftp

PATH = "welfare_exchange.orchestration.triggers.request_arrival.RequestArrivalTrigger"


def _trigger(conn_id: str, seconds: float = 20, **kwargs) -> RequestArrivalTrigger:
    start = dt.datetime.now(dt.timezone.utc)
    return RequestArrivalTrigger(conn_id, start.isoformat(), (start + dt.timedelta(seconds=seconds)).isoformat(),
                                 settle_seconds=0.3, poke_interval=0.5, max_bytes=1_000_000, **kwargs)


def _first_event(trigger: RequestArrivalTrigger, timeout: float = 30) -> dict:
    async def first():
        return await asyncio.wait_for(trigger.run().__anext__(), timeout=timeout)

    return asyncio.run(first()).payload


def test_serialize_round_trips_through_json():
    trigger = RequestArrivalTrigger("sftp_44021", "2026-11-29T10:00:00+00:00", "2026-11-30T10:00:00+00:00",
                                    patterns=("*.xlsx", "*.xls"), settle_seconds=10, poke_interval=60,
                                    max_bytes=52_428_800, stale_after=86400)
    path, kwargs = trigger.serialize()
    assert path == PATH
    kwargs = json.loads(json.dumps(kwargs))  # the triggerer stores them as JSON
    again = RequestArrivalTrigger(**kwargs)
    assert again.serialize() == (path, kwargs)
    assert kwargs["deadline"] == "2026-11-30T10:00:00+00:00" and kwargs["patterns"] == ["*.xlsx", "*.xls"]


def test_a_complete_request_fires_actionable_with_handles_never_names(sftp_municipality):
    m = sftp_municipality
    m.upload_request(b"request bytes", "aanvraag_jansens.xlsx")

    event = _first_event(_trigger(m.conn_id))

    assert event["status"] == "actionable" and event["ready"] == 1 and event["unanswered"] == 0
    handle = transport.name_handle("aanvraag_jansens.xlsx")
    assert event["look"] == {handle: [13, event["look"][handle][1]]}
    assert "jansens" not in json.dumps(event)


def test_a_dotfile_fires_actionable_to_be_answered(sftp_municipality):
    m = sftp_municipality
    with m.sftp() as sftp, sftp.open("inbox/.verborgen", "wb") as fh:
        fh.write(b"x")

    event = _first_event(_trigger(m.conn_id))

    assert event["status"] == "actionable" and event["ready"] == 0 and event["unanswered"] == 1


def test_nothing_but_a_fresh_part_file_waits_until_the_deadline(sftp_municipality):
    m = sftp_municipality
    with m.sftp() as sftp, sftp.open("inbox/aanvraag.xlsx.part", "wb") as fh:
        fh.write(b"half")

    trigger = _trigger(m.conn_id, seconds=2)
    event = _first_event(trigger)

    assert event == {"status": "timeout", "window_start": trigger.window_start, "deadline": trigger.deadline}


def test_a_host_key_that_does_not_match_fires_an_error_at_once(sftp_municipality, monkeypatch, tmp_path):
    m = sftp_municipality
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    conn = m.connection
    conn["extra"]["host_key"] = " ".join(impostor.with_suffix(".pub").read_text().split()[:2])
    monkeypatch.setenv(f"AIRFLOW_CONN_{m.conn_id.upper()}", json.dumps(conn))

    event = _first_event(_trigger(m.conn_id), timeout=20)

    assert event["status"] == "error" and m.conn_id in event["reason"] and "1 time(s)" in event["reason"]


def test_a_handshake_refused_at_max_startups_is_looked_at_again_after_a_backoff(sftp_municipality_factory, monkeypatch):
    with own_sftp_server(max_startups="1") as server:
        account = server.add_municipality(sftp_municipality_factory().nis)
        monkeypatch.setenv(*server.env_var(account.nis))
        # Through the agency's retrying client: this server refuses every second handshake at once.
        transport.upload_bytes(transport.sftp_hook(account.conn_id), b"request", "inbox", "aanvraag.xlsx")
        held = hold_startup(server)
        watcher = release_when_logged(server, held, "past MaxStartups", time.monotonic() + 30)
        try:
            event = _first_event(_trigger(account.conn_id))
        finally:
            watcher.join(timeout=40)
            held.close()
        dropped = server.log_path.read_text(errors="replace").count("past MaxStartups")

    assert dropped >= 1, "the server never refused the trigger's first look: nothing was tested"
    assert event["status"] == "actionable" and event["ready"] == 1
