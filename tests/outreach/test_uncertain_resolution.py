"""Uncertain messages resolved by an operator: listed by outbox id and Message-ID, marked sent or
sent once more (the same message, exactly once), every decision audited with the operator.

A real crash makes the message uncertain (a worker killed by SIGKILL, see ``tests/outreach/crash.py``),
the real aiosmtpd server receives what is sent, and the CLI runs as the operator runs it.
"""

from __future__ import annotations

import collections
import datetime as dt
import email
import email.policy
import getpass
import json
import subprocess
import sys

import pytest
import sqlalchemy as sa

from tests.outreach.builders import OFFER, build_store
from tests.outreach.conftest import EXCHANGE_DATE, SENDER, make_protocol
from tests.outreach.crash import resolver_killed_after_accept, worker_killing_itself
from welfare_exchange import audit, insz
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord
from welfare_exchange.devtools.mail_server import LOOPBACK, free_port
from welfare_exchange.errors import InputError, ProtocolError
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.outreach import outbox, report, resolution, steps
from welfare_exchange.outreach.templates import email_message

NIS = "99502"
#: An offer open for long, so a resend checked against today's date is allowed whenever the test runs.
LASTING_OFFER = {**OFFER, "valid_until": "2099-12-31"}
OPERATOR = audit.Actor(type="user", name="operator-a")


@pytest.fixture
def uncertain(project_db, smtp_sink, outreach_env, request):
    """A campaign with one uncertain message, its send step then finished.

    Parametrised ``before_send`` or ``after_accept``: a worker sending the campaign is killed by
    SIGKILL at its 3rd deliverable message, before or after the server took it. Unparametrised
    (the tests about the resolution's rules), the crash's trace is left in-process: a message
    begun in the outbox and never handed over — what ``before_send`` leaves — without the
    seconds a worker process costs.
    """
    stage = getattr(request, "param", None)
    return _campaign_with_one_uncertain(NIS, stage)


def _campaign_with_one_uncertain(nis: str, stage: str | None, families: int = 24):
    protocol_id = make_protocol(nis, offer=LASTING_OFFER)
    store = build_store(nis, families=families, seed=5)
    run = RunInfo(exchange_date=EXCHANGE_DATE, dag_id="method2_resolution_test", run_id="r", task_id="t", try_number=1)
    exchange_id = steps.open_campaign(protocol_id, run)
    steps.select_families(exchange_id, run)
    steps.render_letters(exchange_id, run)
    if stage is None:
        family = min(b for b in store.expected_by("email") if not store.email_of(b).endswith("@bounce.invalid"))
        with session_scope() as session:
            campaign = steps.campaign_texts(*steps.load_campaign(session, exchange_id))
            message_id, _ = email_message(campaign, beneficiary_id=family, recipient=store.email_of(family), sender=SENDER)
            outbox.begin(session, exchange_id, family, channel=outbox.EMAIL, message_id=message_id)
    else:
        worker_killing_itself(stage, 3, exchange_id)
    steps.send_messages(exchange_id, run)
    with session_scope() as session:
        [message] = resolution.uncertain_messages(session, exchange_id)
    assert message.status == outbox.OPEN and message.message_id.startswith("<")
    return store, exchange_id, message, stage


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "welfare_exchange.cli", "outreach", "uncertain", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def _with_message_id(smtp_sink, message_id: str) -> int:
    return sum(1 for m in smtp_sink.parsed() if m["Message-ID"] == message_id)


def _facts(exchange_id: int, prefix: str = "message.") -> list[AuditRecord]:
    with session_scope() as session:
        return list(session.scalars(
            sa.select(AuditRecord).where(AuditRecord.exchange_id == exchange_id, AuditRecord.action.like(f"{prefix}%"),
                                         AuditRecord.actor_type == "user").order_by(AuditRecord.id)
        ))


def _counts(exchange_id: int) -> dict:
    with session_scope() as session:
        return outbox.outcome_counts(session, exchange_id)


def _no_personal_data(store, *texts: str) -> None:
    leaked = [s for s in store.personal_strings() if any(s in text for text in texts)]
    assert not leaked, f"{len(leaked)} personal string(s) printed"  # never the strings themselves


@pytest.mark.parametrize("uncertain", ["before_send", "after_accept"], indirect=True)
def test_resend_sends_exactly_one_more_message_with_the_same_message_id(uncertain, smtp_sink):
    store, exchange_id, message, stage = uncertain
    before = _with_message_id(smtp_sink, message.message_id)
    assert before == (1 if stage == "after_accept" else 0)

    listed = _cli("list", exchange_id)
    assert listed.returncode == 0, listed.stderr
    header, row, summary = listed.stdout.splitlines()
    assert header.split()[:3] == ["outbox", "id", "Message-ID"]
    assert row.split()[:2] == [str(message.outbox_id), message.message_id] and "check the SMTP log" in row
    assert summary == "1 unresolved, 0 resolved of 1 uncertain message(s)"

    total = smtp_sink.count()
    done = _cli("resolve", exchange_id, "--outbox-id", message.outbox_id, "--as", "resend",
                "--reason", "not found in the relay's log")
    assert done.returncode == 0, done.stderr
    assert "sent once more, accepted by the SMTP server" in done.stdout
    assert smtp_sink.count() == total + 1, "exactly one more message"
    assert _with_message_id(smtp_sink, message.message_id) == before + 1, "the same Message-ID, for the receiver to dedupe"
    family = int(message.key.rsplit(":", 1)[1])
    resent_to_the_family = smtp_sink.recipients()[-1] == store.email_of(family)
    assert resent_to_the_family

    again = _cli("resolve", exchange_id, "--all", "--as", "resend", "--reason", "all of them")
    assert again.returncode == 0 and "no unresolved uncertain message" in again.stdout
    [named] = resolution.resolve(exchange_id, "resend", actor=OPERATOR, reason="twice", outbox_ids=[message.outbox_id])
    assert not named.changed and "already resolved" in named.note
    assert smtp_sink.count() == total + 1, "re-running the resolution sends nothing"

    facts = _facts(exchange_id)
    assert [(f.action, f.outcome) for f in facts] == [("message.resend_requested", "success"), ("message.resent", "success")]
    assert {f.actor for f in facts} == {getpass.getuser()}
    assert all("not found in the relay's log" in f.message and message.message_id in f.message for f in facts)
    assert all(f.subject_ref for f in facts), "the family appears by its keyed reference"
    assert _counts(exchange_id)["uncertain"] == 0 and _counts(exchange_id)["resolved_resent"] == 1
    with session_scope() as session:
        [resolved] = resolution.uncertain_messages(session, exchange_id)
    assert resolved.status == outbox.RESENT and resolved.decided_by == getpass.getuser()
    _no_personal_data(store, listed.stdout, listed.stderr, done.stdout, done.stderr, again.stdout,
                      "\n".join(f.message for f in facts))
    with session_scope() as session:
        assert audit.verify(session).ok


def test_resolve_as_sent_sends_nothing_and_is_audited_once(uncertain, smtp_sink):
    store, exchange_id, message, _ = uncertain
    total = smtp_sink.count()
    bare_id = message.message_id.strip("<>")  # as found in a mail log
    done = _cli("resolve", exchange_id, "--message-id", bare_id, "--as", "sent", "--reason", "queue id 4F2A delivered")
    assert done.returncode == 0, done.stderr
    assert "confirmed as sent; nothing sent" in done.stdout
    [again] = resolution.resolve(exchange_id, "resend", actor=OPERATOR, reason="changed my mind",
                                 message_ids=[message.message_id])
    assert not again.changed and "already resolved" in again.note
    assert resolution.resolve(exchange_id, "sent", actor=OPERATOR, reason="again", every=True) == []
    assert smtp_sink.count() == total, "nothing sent"
    [fact] = _facts(exchange_id)
    assert (fact.action, fact.outcome, fact.actor) == ("message.confirmed", "success", getpass.getuser())
    assert "queue id 4F2A delivered" in fact.message and fact.subject_ref
    counts = _counts(exchange_id)
    assert (counts["uncertain"], counts["resolved_sent"]) == (0, 1)
    listed = _cli("list", exchange_id, "--all", "--json")
    assert [(m["outbox_id"], m["status"], m["resolved"]) for m in json.loads(listed.stdout)] == [
        (message.outbox_id, "confirmed", True)]
    _no_personal_data(store, done.stdout, listed.stdout, fact.message)


def test_a_resend_interrupted_after_the_server_took_it_is_never_sent_again(uncertain, smtp_sink):
    store, exchange_id, message, _ = uncertain
    resolver_killed_after_accept(exchange_id, message.outbox_id)
    assert _with_message_id(smtp_sink, message.message_id) == 1
    with session_scope() as session:
        [listed] = resolution.uncertain_messages(session, exchange_id)
    assert listed.status == outbox.RESEND_IN_FLIGHT and listed.decided_by == "operator-a"

    total = smtp_sink.count()
    [first] = resolution.resolve(exchange_id, "resend", actor=OPERATOR, reason="retry", every=True, on=EXCHANGE_DATE)
    [second] = resolution.resolve(exchange_id, "resend", actor=OPERATOR, reason="retry", every=True, on=EXCHANGE_DATE)
    assert (first.status, first.changed) == (outbox.RESEND_UNCERTAIN, True) and "not sent again" in first.note
    assert (second.status, second.changed) == (outbox.RESEND_UNCERTAIN, False)
    assert smtp_sink.count() == total, "a resend whose fate a crash hid is not sent a third time"
    assert _counts(exchange_id)["uncertain"] == 1

    [confirmed] = resolution.resolve(exchange_id, "sent", actor=OPERATOR, reason="found in the log", every=True)
    assert confirmed.status == outbox.CONFIRMED and smtp_sink.count() == total
    actions = [f.action for f in _facts(exchange_id)]
    assert actions == ["message.resend_requested", "message.resend_uncertain", "message.confirmed"]


def test_a_resend_the_server_did_not_take_is_tried_again_later(uncertain, smtp_sink, monkeypatch):
    store, exchange_id, message, _ = uncertain
    total = smtp_sink.count()
    down = {**smtp_sink.connection(), "host": LOOPBACK, "port": free_port()}  # nothing listens there
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_AGENCY", json.dumps(down))
    [refused] = resolution.resolve(exchange_id, "resend", actor=OPERATOR, reason="not in the log",
                                   outbox_ids=[message.outbox_id], on=EXCHANGE_DATE)
    assert refused.status == outbox.RESEND_NOT_SENT and refused.unreachable and smtp_sink.count() == total
    failed = _cli("resolve", exchange_id, "--all", "--as", "resend", "--reason", "not in the log")
    assert failed.returncode == 2 and "run the same command again" in failed.stderr

    monkeypatch.setenv("AIRFLOW_CONN_SMTP_AGENCY", json.dumps(smtp_sink.connection()))
    [sent] = resolution.resolve(exchange_id, "resend", actor=OPERATOR, reason="server back", every=True,
                                on=EXCHANGE_DATE)
    assert sent.status == outbox.RESENT and smtp_sink.count() == total + 1
    assert _with_message_id(smtp_sink, message.message_id) == 1
    actions = [f.action for f in _facts(exchange_id) if f.actor == "operator-a"]
    assert actions == ["message.resend_requested", "message.resend_not_sent", "message.resend_requested",
                       "message.resent"]


def test_a_closed_protocol_sends_nothing_again_but_a_confirmation_is_still_recorded(uncertain, smtp_sink):
    store, exchange_id, message, _ = uncertain
    with session_scope() as session:
        protocol_id = steps.load_campaign(session, exchange_id)[1].id
        from welfare_exchange.protocols import transition

        transition(session, protocol_id, "revoke", actor=OPERATOR, reason="college decision withdrawn")
    total = smtp_sink.count()
    with pytest.raises(ProtocolError, match="nothing sent again: .* revoked"):
        resolution.resolve(exchange_id, "resend", actor=OPERATOR, reason="x", every=True, on=EXCHANGE_DATE)
    assert smtp_sink.count() == total
    [confirmed] = resolution.resolve(exchange_id, "sent", actor=OPERATOR, reason="in the log", every=True)
    assert confirmed.status == outbox.CONFIRMED


def test_bad_resolutions_are_refused_with_what_to_do(uncertain):
    _, exchange_id, message, _ = uncertain
    cases = [
        (dict(outbox_ids=[message.outbox_id], reason=" "), "needs a reason"),
        (dict(outbox_ids=[message.outbox_id], reason=f"see {insz.make(dt.date(1985, 7, 30), 33)}"), "may not contain an INSZ"),
        (dict(outbox_ids=[999999], reason="x"), "not an uncertain message of campaign"),
        (dict(outbox_ids=[message.outbox_id], every=True, reason="x"), "not both"),
        (dict(reason="x"), "or give --all"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(InputError, match=expected):
            resolution.resolve(exchange_id, "sent", actor=OPERATOR, **kwargs)
    with pytest.raises(InputError, match="resolve as one of sent, resend"):
        resolution.resolve(exchange_id, "ignore", actor=OPERATOR, reason="x", every=True)
    assert _facts(exchange_id) == [] and _counts(exchange_id)["uncertain"] == 1


def test_the_report_and_the_status_count_uncertain_and_resolved_apart(uncertain, smtp_sink):
    _, exchange_id, message, _ = uncertain
    with session_scope() as session:
        exchange = steps.load_campaign(session, exchange_id)[0]
        unreachable = exchange.counts["unreachable"]
    before = report.report_counts(_counts(exchange_id), unreachable)
    assert (before["uncertain"], before["email_resolved"]) == (1, 0)
    resolution.resolve(exchange_id, "sent", actor=OPERATOR, reason="in the log", every=True)
    after = report.report_counts(_counts(exchange_id), unreachable)
    assert (after["uncertain"], after["email_resolved"]) == (0, 1)
    assert sum(after.values()) == sum(before.values()), "every family in exactly one category"
    status = subprocess.run([sys.executable, "-m", "welfare_exchange.cli", "outreach", "status", str(exchange_id)],
                            capture_output=True, text=True, timeout=60)
    outbox_counts = json.loads(status.stdout)["outbox"]
    assert (outbox_counts["uncertain"], outbox_counts["resolved_sent"]) == (0, 1), "the operator sees exact counts"


def test_the_municipality_never_sees_a_small_uncertain_or_resolved_count():
    counts = collections.Counter(email=180, letter=40, uncertain=2, email_resolved=3)
    data, shown = report.render(
        municipality="Testgemeente", nis_code="99999", protocol_id=5, exchange_id=8,
        reference_date=dt.date(2026, 10, 1), campaign_date=dt.date(2026, 11, 2), offer_title="Gratis zwemmen",
        counts=dict(counts),
    )
    text = data.decode()
    assert shown["uncertain"] == shown["email_resolved"] == report.PRIMARY
    assert report.CATEGORIES["email_resolved"] in text and report.CATEGORIES["uncertain"] in text
    table = [line.split()[-1] for line in text.splitlines() if line.startswith("  ")]
    assert "2" not in table and "3" not in table
    assert report.report_counts({"email": 5, "resolved_sent": 1, "resolved_resent": 2, "resolved_bounced": 1,
                                 "bounced": 2, "uncertain": 3}, 4) == {
        "email": 5, "email_resolved": 3, "letter": 0, "bounced": 3, "uncertain": 3, "unreachable": 4}


def test_a_listed_message_parses_back_to_the_sent_message(uncertain, smtp_sink):
    """The Message-ID the operator looks up is the one the message carries on the wire."""
    _, exchange_id, message, _ = uncertain
    resolution.resolve(exchange_id, "resend", actor=OPERATOR, reason="x", every=True, on=EXCHANGE_DATE)
    raw = smtp_sink.messages[-1][1]
    assert email.message_from_bytes(raw, policy=email.policy.default)["Message-ID"] == message.message_id


def test_the_municipality_gets_an_updated_report_once_uncertain_messages_are_resolved(
    project_db, sftp_municipality, smtp_sink, outreach_env
):
    store, exchange_id, message, _ = _campaign_with_one_uncertain(sftp_municipality.nis, None, families=40)
    run = RunInfo(exchange_date=EXCHANGE_DATE, dag_id="method2_resolution_test", run_id="r", task_id="report",
                  try_number=1)
    first = steps.report_to_municipality(exchange_id, run)
    assert steps.update_report(exchange_id, actor=OPERATOR, on=EXCHANGE_DATE) == {"revision": 1, "unchanged": True}
    resolution.resolve(exchange_id, "sent", actor=OPERATOR, reason="in the log", every=True)

    updated = subprocess.run([sys.executable, "-m", "welfare_exchange.cli", "outreach", "report", str(exchange_id)],
                             capture_output=True, text=True, timeout=60)
    assert updated.returncode == 0, updated.stderr
    name = report.report_name(sftp_municipality.nis, steps_protocol_id(exchange_id), exchange_id, 2)
    assert "report version 2 delivered" in updated.stdout and name in updated.stdout
    files = sftp_municipality.read_outbox()
    assert sorted(files) == sorted([first["name"], name]), "version 1 stays; version 2 is added"
    text = files[name].decode()
    def shown(category: str) -> str:
        [row] = [row for row in text.splitlines() if row.startswith(f"  {report.CATEGORIES[category]} ")]
        return row.split()[-1]

    assert "Versie 2: vervangt versie 1" in text
    assert shown("uncertain") == "0" and shown("email_resolved") == report.PRIMARY
    assert sum(secret in text for secret in store.personal_strings()) == 0

    again = steps.update_report(exchange_id, actor=OPERATOR, on=EXCHANGE_DATE)
    assert again == {"revision": 2, "unchanged": True}
    assert sorted(sftp_municipality.read_outbox()) == sorted([first["name"], name])
    with session_scope() as session:
        delivered = session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "report.delivered")
                                    .order_by(AuditRecord.id)).all()
        assert [r.actor_type for r in delivered] == ["system", "user"] and "version 2" in delivered[1].message
        assert audit.verify(session).ok


def steps_protocol_id(exchange_id: int) -> int:
    with session_scope() as session:
        return steps.load_campaign(session, exchange_id)[1].id


def test_two_operators_resending_at_once_send_one_message(uncertain, smtp_sink, monkeypatch):
    """Operator A's resend is at the SMTP server when operator B resolves the same message: B sends nothing."""
    import threading

    from welfare_exchange.outreach import smtp

    _, exchange_id, message, _ = uncertain
    at_server, go_on = threading.Event(), threading.Event()
    original = smtp.SmtpSession.send

    def slow_send(self, *args, **kwargs):
        at_server.set()
        assert go_on.wait(timeout=30)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(smtp.SmtpSession, "send", slow_send)
    total, results = smtp_sink.count(), {}
    operator_a = audit.Actor(type="user", name="operator-a")
    thread = threading.Thread(target=lambda: results.update(a=resolution.resolve(
        exchange_id, "resend", actor=operator_a, reason="a", every=True, on=EXCHANGE_DATE)))
    thread.start()
    assert at_server.wait(timeout=30)
    [b] = resolution.resolve(exchange_id, "resend", actor=audit.Actor(type="user", name="operator-b"), reason="b",
                             outbox_ids=[message.outbox_id], on=EXCHANGE_DATE)
    go_on.set()
    thread.join(timeout=30)
    assert b.status == outbox.RESEND_UNCERTAIN and "not sent again" in b.note
    [a] = results["a"]
    assert a.status == outbox.RESENT, "what A heard from the server settles it"
    assert smtp_sink.count() == total + 1 and _with_message_id(smtp_sink, message.message_id) == 1
    assert [(f.action, f.actor) for f in _facts(exchange_id)] == [
        ("message.resend_requested", "operator-a"), ("message.resend_uncertain", "operator-b"),
        ("message.resent", "operator-a")]
    with session_scope() as session:
        assert audit.verify(session).ok
