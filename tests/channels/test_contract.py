"""The Channel contract, run against every channel on its real far side (``channel_world``).

What every channel must do, as Method 1, Method 2, the feeds and retention rely on it:
arrival (a plain look, no name in what it returns), fetch (once), quarantine with one report,
deliver exactly once, send a report once, and locate + verify + delete a stored copy — a copy
swapped for another file is reported missing, never deleted or certified.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from tests.channels.conftest import CONTRACT_CHANNELS, sha256
from welfare_exchange import audit, ledger
from welfare_exchange.channels import registry
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Exchange, RetentionItem
from welfare_exchange.exchange import steps
from welfare_exchange.channels.common import ExchangeRefused
from welfare_exchange.protocols import get
from welfare_exchange.retention import runner
from welfare_exchange.staging import Staging

ACTOR = audit.Actor(type="system", name="contract-test")


def _take(w, n: int) -> int | None:
    item = w.channel.find_request(w.protocol_id, actor=ACTOR, on=w.day, settle_seconds=0.2)
    assert item is not None
    return w.channel.fetch_request(w.protocol_id, item, w.run(n))


def _exchange(exchange_id: int) -> Exchange:
    with session_scope() as session:
        return session.get(Exchange, exchange_id)


def test_every_registered_channel_is_under_contract(folder_channel):
    assert set(registry.names()) <= set(CONTRACT_CHANNELS)


def test_arrival_is_a_plain_look_that_names_no_file(channel_world):
    w = channel_world
    assert w.channel.find_request(w.protocol_id, actor=ACTOR, on=w.day, settle_seconds=0.2) is None
    w.send_request(w.request(), 1)
    item = w.channel.find_request(w.protocol_id, actor=ACTOR, on=w.day, settle_seconds=0.2)
    assert item is not None
    assert "aanvraag" not in repr(item), "what travels to fetch_request is a handle, never the file name"


def test_fetch_takes_the_request_once_and_stages_it(channel_world):
    w = channel_world
    data = w.request()
    w.send_request(data, 1)
    exchange_id = _take(w, 1)
    assert exchange_id is not None
    exchange = _exchange(exchange_id)
    assert exchange.protocol_id == w.protocol_id and exchange.request_sha256 == sha256(data)
    assert sha256(Staging(w.protocol_id, exchange_id).read_request()) == sha256(data)
    # A retry of the task takes nothing new; the request is no longer waiting.
    assert w.channel.fetch_request(w.protocol_id, {}, w.run(1)) == exchange_id
    assert w.channel.find_request(w.protocol_id, actor=ACTOR, on=w.day, settle_seconds=0.2) is None
    # The same bytes again are a duplicate: nothing is processed.
    w.send_request(data, 2)
    assert _take(w, 2) is None


def test_quarantine_sets_the_request_aside_and_reports_once(channel_world):
    w = channel_world
    w.send_request(w.request(password="not-the-agreed-password"), 1)
    exchange_id = _take(w, 1)
    with pytest.raises(ExchangeRefused):
        steps.decrypt_and_validate(exchange_id, w.run(1, "decrypt_and_validate"))
    w.channel.quarantine(exchange_id, _exchange_error(exchange_id), w.run(1, "decrypt_and_validate"))  # once more
    assert _exchange(exchange_id).state == "quarantined"
    reports = w.received()
    assert len(reports) == 1, "one validation report, however often quarantine runs"
    assert str(exchange_id).encode() in reports[0][1] or str(exchange_id) in reports[0][0]


def _exchange_error(exchange_id: int):
    from welfare_exchange.intake import IntakeError

    return IntakeError(_exchange(exchange_id).failure_code)


def test_deliver_sends_the_built_result_exactly_once(channel_world):
    w = channel_world
    w.send_request(w.request(), 1)
    exchange_id = _take(w, 1)
    for task in ("decrypt_and_validate", "match_entitlements", "build_result"):
        getattr(steps, task)(exchange_id, w.run(1, task))
    first = w.channel.deliver(exchange_id, w.run(1, "deliver_result"))
    again = w.channel.deliver(exchange_id, w.run(1, "deliver_result"))
    assert not first["already_delivered"] and again["already_delivered"]
    built = _exchange(exchange_id).result_sha256
    got = w.received()
    assert [sha256(data) for _, data in got] == [built], "one delivery, byte for byte the built result"
    assert w.channel.confirm_delivery(exchange_id, w.run(1, "deliver_result"))
    assert _exchange(exchange_id).state == "delivered"


def test_send_file_sends_a_report_once(channel_world):
    w = channel_world
    with session_scope() as session:
        protocol = get(session, w.protocol_id)
    text = b"Rapport: enkel aantallen.\n"
    sent = [
        w.channel.send_file(protocol, key="contract:report", kind="report_delivered", exchange_id=None,
                            name="rapport-contract.txt", payload=text, subject="Rapport", content_type="text/plain",
                            actor=ACTOR, attempt="1", today=w.day, sensitive=False)
        for _ in range(2)
    ]
    assert [s.already_sent for s in sent] == [False, True]
    assert sent[0].sha256 == sent[1].sha256 == sha256(text)
    assert [data.replace(b"\r\n", b"\n") for _, data in w.received()] == [text]
    with session_scope() as session:
        assert ledger.is_done(session, "contract:report")


def test_retention_deletes_the_stored_copy_only_when_it_is_the_recorded_one(channel_world):
    w = channel_world
    data = w.request()
    w.send_request(data, 1)
    exchange_id = _take(w, 1)
    with session_scope() as session:
        [item] = session.scalars(sa.select(RetentionItem).where(
            RetentionItem.exchange_id == exchange_id, RetentionItem.where.in_(w.channel.places)))
        item_id, location, deadline = item.id, item.location, item.deadline
    stored = w.stored_path(location)
    original = stored.read_bytes()
    assert w.channel.shown_location(location) and "aanvraag" not in w.channel.shown_location(location)

    stored.write_bytes(original.replace(b"\r\n", b"\n") + b"\nanother file under the same name\n")  # swapped
    report = runner.delete_due(deadline, actor=ACTOR, exchange_id=exchange_id, kinds=(item.kind,))
    assert report.missing == [item_id] and report.certificates == []
    assert stored.exists(), "a copy that is not the recorded one is never deleted"
    with session_scope() as session:
        assert session.get(RetentionItem, item_id).deleted_at is None

    stored.write_bytes(original)  # the recorded copy is back
    report = runner.delete_due(deadline + dt.timedelta(days=1), actor=ACTOR, exchange_id=exchange_id, kinds=(item.kind,))
    assert [c.item_id for c in report.certificates] == [item_id] and report.missing == []
    assert not stored.exists()
    with session_scope() as session:
        assert session.get(RetentionItem, item_id).deletion_outcome == "deleted"


def test_an_inbound_file_is_found_by_pattern_taken_once_and_set_aside_once(channel_world):
    """The other files a municipality sends (a Sociaal Huis's referral feedback): found by name
    pattern without naming it, taken once per key (a second take returns the same copy), set
    aside once; every kept copy is the one its SHA-256 says."""
    w = channel_world
    patterns = ("terugkoppeling*.xlsx",)
    with session_scope() as session:
        protocol = get(session, w.protocol_id)
    assert w.channel.find_inbound(protocol, patterns, settle_seconds=0.2) is None
    data = w.request()
    w.send_named(data, "terugkoppeling_1.xlsx")
    handle = w.channel.find_inbound(protocol, patterns, settle_seconds=0.2)
    assert handle is not None and "terugkoppeling" not in repr(handle)
    run = w.run(1, "receive_feedback")
    taken = w.channel.take_inbound(protocol, handle, patterns, key="contract:inbound:1", run=run)
    assert taken.data == data
    assert sha256(w.stored_path(taken.location).read_bytes()) == taken.sha256
    assert w.channel.find_inbound(protocol, patterns, settle_seconds=0.2) is None, "taken out of the arrivals"
    again = w.channel.take_inbound(protocol, handle, patterns, key="contract:inbound:1", run=run)
    assert (again.data, again.location, again.sha256) == (data, taken.location, taken.sha256)
    aside = w.channel.quarantine_inbound(protocol, taken, key="contract:inbound:1:aside")
    assert aside.location != taken.location and sha256(w.stored_path(aside.location).read_bytes()) == aside.sha256
    assert w.channel.quarantine_inbound(protocol, taken, key="contract:inbound:1:aside").location == aside.location
