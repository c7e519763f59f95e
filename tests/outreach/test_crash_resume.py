"""A worker killed mid-batch: the send step, run in a subprocess, dies by SIGKILL; the step is
run again. Every family gets at most one e-mail; a message whose fate the crash hid is settled
``uncertain`` and never sent again (at most once, see ``welfare_exchange.outreach.outbox``)."""

from __future__ import annotations

import collections
import os
import signal
import time

import pytest

from tests.outreach.builders import build_store
from tests.outreach.conftest import EXCHANGE_DATE, make_protocol
from tests.outreach.crash import worker as start_worker
from tests.outreach.crash import worker_killing_itself
from welfare_exchange import audit, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.outreach import outbox, steps
from welfare_exchange.outreach.templates import message_key

NIS = "99501"


@pytest.fixture
def campaign(sqlite_db, smtp_sink, outreach_env):
    protocol_id = make_protocol(NIS)
    store = build_store(NIS, families=60, seed=11)
    run = RunInfo(exchange_date=EXCHANGE_DATE, dag_id="method2_crash_test", run_id="first", task_id="t", try_number=1)
    exchange_id = steps.open_campaign(protocol_id, run)
    steps.select_families(exchange_id, run)
    steps.render_letters(exchange_id, run)
    return store, exchange_id, run


def _deliverable(store) -> set[str]:
    return {store.email_of(b) for b in store.expected_by("email")} - {
        store.email_of(b) for b in store.expected_by("email") if store.email_of(b).endswith("@bounce.invalid")
    }


def _outcomes(exchange_id: int) -> dict[str, str]:
    with session_scope() as session:
        return {k: e.outcome for k, e in outbox.entries(session, exchange_id).items() if e.settled}


def _finish(exchange_id: int, run: RunInfo) -> None:
    """The retry: the same step, in this process, with the same run info."""
    steps.send_messages(exchange_id, run)
    with session_scope() as session:
        assert outbox.outcome_counts(session, exchange_id)["pending"] == 0
        assert audit.verify(session).ok


def test_worker_killed_from_outside_mid_batch_then_resumed(campaign, smtp_sink):
    store, exchange_id, run = campaign
    deliverable = _deliverable(store)
    assert len(deliverable) >= 25
    worker = start_worker("none", 0, exchange_id, rate="40")
    deadline = time.monotonic() + 60
    while smtp_sink.count() < 10 and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.005)
    os.kill(worker.pid, signal.SIGKILL)
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    leaked = b"@example.org" in err  # a variable: a failing assertion must not print the output
    assert not leaked
    killed_at = smtp_sink.count()
    assert 10 <= killed_at < len(deliverable), "the worker must die mid-batch"

    _finish(exchange_id, run)

    per_recipient = collections.Counter(smtp_sink.recipients())
    assert max(per_recipient.values()) == 1, "a family got a second e-mail"
    outcomes = _outcomes(exchange_id)
    uncertain = [k for k, o in outcomes.items() if o == "uncertain"]
    assert len(uncertain) <= 1, "only the message in flight at the kill can be uncertain"
    # Everyone got exactly one, except possibly the one in flight when the worker died.
    assert len(deliverable) - len(per_recipient) == len(uncertain) - sum(
        1 for k in uncertain if store.email_of(int(k.rsplit(":", 1)[1])) in per_recipient
    )


def test_killed_after_the_server_accepted_but_before_the_outbox_knew(campaign, smtp_sink):
    store, exchange_id, run = campaign
    deliverable = _deliverable(store)
    worker_killing_itself("after_accept", 7, exchange_id)
    assert smtp_sink.count() == 7

    _finish(exchange_id, run)

    per_recipient = collections.Counter(smtp_sink.recipients())
    exactly_one = len(per_recipient) == len(deliverable) and set(per_recipient.values()) == {1}
    assert exactly_one, "not exactly one e-mail per family"
    outcomes = _outcomes(exchange_id)
    assert collections.Counter(outcomes.values())["uncertain"] == 1
    actions = collections.Counter(r for r in _actions())
    assert actions["message.uncertain"] == 1
    assert actions["message.sent"] == len(deliverable) - 1


def test_killed_after_begin_before_handing_over_is_not_resent_blindly(campaign, smtp_sink):
    """At most once: the family whose message was begun but never handed over gets none."""
    store, exchange_id, run = campaign
    deliverable = _deliverable(store)
    worker_killing_itself("before_send", 4, exchange_id)
    assert smtp_sink.count() == 3

    _finish(exchange_id, run)

    per_recipient = collections.Counter(smtp_sink.recipients())
    assert set(per_recipient.values()) == {1}
    assert len(deliverable) - len(per_recipient) == 1
    [uncertain] = [k for k, o in _outcomes(exchange_id).items() if o == "uncertain"]
    got_one = store.email_of(int(uncertain.rsplit(":", 1)[1])) in per_recipient
    assert not got_one, "the uncertain family's message was never handed over"
    # And running the step yet again changes nothing.
    before = smtp_sink.count()
    steps.send_messages(exchange_id, run)
    assert smtp_sink.count() == before


def test_protocol_revoked_while_sending_stops_the_campaign(campaign, smtp_sink, monkeypatch):
    store, exchange_id, run = campaign
    from welfare_exchange.errors import ProtocolError
    from welfare_exchange.outreach import smtp
    from welfare_exchange.protocols import transition

    monkeypatch.setenv("WELFARE_EXCHANGE_OUTREACH_GATE_RECHECK_SECONDS", "0")
    original = smtp.SmtpSession.send

    def send_then_revoke(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if smtp_sink.count() == 5:  # the college withdraws its decision mid-campaign
            with session_scope() as session:
                protocol_id = ledger.get_exchange(session, exchange_id).protocol_id
                transition(session, protocol_id, "revoke", actor=audit.Actor.current_user(), reason="test")
        return result

    monkeypatch.setattr(smtp.SmtpSession, "send", send_then_revoke)
    with pytest.raises(ProtocolError, match="revoked"):
        steps.send_messages(exchange_id, run)
    assert smtp_sink.count() == 5
    assert "campaign.blocked" in _actions()


def test_throttle_spaces_the_sends():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    throttle = outbox.Throttle(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        throttle.wait()
    assert now[0] == pytest.approx(1.0) and len(slept) == 4


def test_message_key_is_per_family_per_campaign():
    assert message_key(3, 17) == "campaign:3:family:17"


def _actions() -> list[str]:
    import sqlalchemy as sa

    from welfare_exchange.db.models import AuditRecord

    with session_scope() as session:
        return list(session.scalars(sa.select(AuditRecord.action)))


def test_the_family_list_has_a_deletion_deadline_as_soon_as_it_exists(sqlite_db, smtp_sink, outreach_env):
    """A campaign that stops after selecting still leaves no list of families without a deadline."""
    import sqlalchemy as sa

    from welfare_exchange.db.models import RetentionItem

    protocol_id = make_protocol(NIS)
    build_store(NIS, families=12, seed=12)
    run = RunInfo(exchange_date=EXCHANGE_DATE, dag_id="method2_retention_test", run_id="r", task_id="t", try_number=1)
    exchange_id = steps.open_campaign(protocol_id, run)
    steps.select_families(exchange_id, run)
    with session_scope() as session:
        [item] = session.scalars(sa.select(RetentionItem).where(RetentionItem.exchange_id == exchange_id)).all()
    assert item.kind == "staging" and item.deadline > EXCHANGE_DATE and item.location.endswith(f"exchange-{exchange_id}")
