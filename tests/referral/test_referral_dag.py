"""The referral DAGs with ``dag.test()``, against the real OpenSSH SFTP server on loopback.

Nothing without consent and nothing beyond the agreement: families without recorded consent,
with withdrawn consent, domiciled elsewhere or already referred are never sent; only the
agreement's fields leave; feedback comes back and is validated; no personal data appears in the
logs, XCom or the Exchanges view. Every test's output is scanned for INSZ numbers as well
(tests/fixtures/pii_scan.py).
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
import sqlalchemy as sa

from tests.alerts.conftest import webhook  # noqa: F401 (fixture)
from tests.dagutil import task_states
from tests.referral.conftest import LIST_RUN, TODAY, elsewhere_nis, import_families, xcom_text
from tests.referral.builders import NAME, family, feedback_file, read_workbook
from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange, Referral, SideEffect
from welfare_exchange.orchestration.referral_dag import feedback_dag_id, referral_dag_id
from welfare_exchange.settings import get_settings

pytestmark = [pytest.mark.sftp]

def test_only_consenting_families_of_the_municipality_are_sent_once_with_the_agreements_fields(agreement, caplog):
    caplog.set_level(logging.INFO)
    nis = agreement.municipality.nis
    due = [family(nis=nis, given=TODAY - dt.timedelta(days=3)) for _ in range(4)]
    no_consent = family(nis=nis, given=None)
    withdrawn = family(nis=nis, given=TODAY - dt.timedelta(days=20), withdrawn=TODAY - dt.timedelta(days=2))
    elsewhere = family(nis=elsewhere_nis(nis), given=TODAY - dt.timedelta(days=3))
    not_poor = family(nis=nis, criteria=("income", "health"), given=TODAY - dt.timedelta(days=3))
    import_families([*due, no_consent, withdrawn, elsewhere, not_poor])

    run = agreement.run_list()
    assert run.state == "success", task_states(run)
    [(name, data)] = agreement.outbox("doorverwijzingen_").items()
    assert name == f"doorverwijzingen_{nis}_p{agreement.protocol_id}_{TODAY.isoformat()}.xlsx"
    sheets = read_workbook(data, agreement.password)
    rows = sheets["Doorverwijzingen"]
    # Only the agreement's fields: no address, phone, e-mail, birth month — and never an INSZ.
    assert rows[0] == ["Doorverwijzingsnummer", "Naam ouder", "Criteria kansarmoede"]
    assert len(rows) == 1 + len(due)
    codes = agreement.codes()
    assert {audit.subject_key(f.child) for f in due} == set(codes)
    assert sorted(r[0] for r in rows[1:]) == sorted(codes.values())
    flat = json.dumps(sheets, default=str)
    for f in [*due, no_consent, withdrawn, elsewhere]:
        assert f.child not in flat and f.parent not in flat
    assert due[0].email not in flat and due[0].address[0] not in flat and due[0].phone not in flat

    # A re-run of the day and a later run send nothing again: every family is referred once.
    assert agreement.run_list().state == "success"
    assert agreement.run_list(LIST_RUN + dt.timedelta(days=7)).state == "success"
    assert agreement.outbox("doorverwijzingen_") == {name: data}
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Referral)) == len(due)
        delivered = session.scalars(sa.select(SideEffect).where(SideEffect.kind == "referral_list")).all()
        assert len(delivered) == 1 and delivered[0].state == "done"
        assert all(r.sent_at is not None for r in session.scalars(sa.select(Referral)))
        assert audit.verify(session).ok
    assert agreement.actions().count("referral.list_sent") == 1
    assert NAME not in caplog.text and due[0].email not in caplog.text
    xcom = xcom_text(referral_dag_id(agreement.entry))
    assert NAME not in xcom and not any(f.child in xcom or f.parent in xcom for f in due)


def test_feedback_in_evaluation_out_and_unknown_ids_refused_by_line(agreement, caplog):
    caplog.set_level(logging.INFO)
    nis = agreement.municipality.nis
    families = [family(nis=nis, given=TODAY - dt.timedelta(days=3)) for _ in range(12)]
    import_families(families)
    assert agreement.run_list().state == "success"
    codes = sorted(agreement.codes().values())

    # A file with an unknown id on line 3: refused whole, quarantined, a report by line number.
    unknown = "DV-ZZZZ-ZZZZ"
    agreement.municipality.upload_request(
        feedback_file([(codes[0], "gecontacteerd", TODAY), (unknown, "geweigerd", TODAY)], agreement.password),
        "terugkoppeling_1.xlsx",
    )
    run = agreement.run_feedback()
    assert run.state == "success", task_states(run)
    states = task_states(run)
    assert states["receive_feedback"] == "success" and states["report_evaluation"] == "skipped"
    assert agreement.remote("inbox") == [] and agreement.remote("quarantine") == ["terugkoppeling_1.xlsx"]
    [(_, report)] = agreement.outbox("terugkoppeling_geweigerd_").items()
    text = report.decode()
    assert "unknown_referral" in text and "line(s) 3" in text and unknown not in text

    # The corrected file: recorded, an evaluation report in the agency's own outbox.
    outcomes = ["gecontacteerd"] * 6 + ["ondersteuning gestart"] * 4 + ["onbereikbaar"] * 2
    good = feedback_file(list(zip(codes, outcomes, [TODAY] * 12)), agreement.password)
    agreement.municipality.upload_request(good, "terugkoppeling_2.xlsx")
    run = agreement.run_feedback(LIST_RUN + dt.timedelta(hours=4))
    assert run.state == "success", task_states(run)
    assert task_states(run)["report_evaluation"] == "success"
    reports = sorted((get_settings().agency_outbox / "referral").iterdir())
    assert len(reports) == 1
    evaluation = reports[0].read_text()
    assert "gecontacteerd" in evaluation and "<10" in evaluation and "12" in evaluation
    assert NAME not in evaluation and not any(f.child in evaluation for f in families)

    # The same file again: a duplicate, nothing recorded twice, no second report.
    agreement.municipality.upload_request(good, "terugkoppeling_3.xlsx")
    run = agreement.run_feedback(LIST_RUN + dt.timedelta(hours=5))
    assert run.state == "success" and task_states(run)["report_evaluation"] == "skipped"
    assert len(list((get_settings().agency_outbox / "referral").iterdir())) == 1
    with session_scope() as session:
        from welfare_exchange.db.models import ReferralFeedback

        assert session.scalar(sa.select(sa.func.count()).select_from(ReferralFeedback)) == 12
        states = sorted(e.state for e in session.scalars(sa.select(Exchange)))
        assert states.count("quarantined") == 1 and states.count("validated") == 1
        assert audit.verify(session).ok
    assert agreement.actions().count("referral.feedback_duplicate") == 1

    # The Exchanges view shows the evaluation (suppressed figures), and no personal data.
    from welfare_exchange.ui import queries

    with session_scope() as session:
        view = json.dumps(queries.overview(session, TODAY).to_dict(), default=str)
        row = next(p for p in queries.overview(session, TODAY).protocols if p.protocol_id == agreement.protocol_id)
    assert row.dag_id == referral_dag_id(agreement.entry)
    assert row.evaluation["file"] == reports[0].name and row.evaluation["outcomes"]["contacted"] == "<10"
    assert NAME not in view and not any(f.child in view for f in families)
    assert NAME not in caplog.text
    xcom = xcom_text(referral_dag_id(agreement.entry), feedback_dag_id(agreement.entry))
    assert NAME not in xcom and unknown not in xcom and not any(f.child in xcom for f in families)


def test_withdrawal_after_delivery_sends_one_notice_and_overdue_feedback_is_flagged(agreement, caplog, monkeypatch,
                                                                                      webhook):  # noqa: F811
    nis = agreement.municipality.nis
    families = [family(nis=nis, given=TODAY - dt.timedelta(days=10)) for _ in range(3)]
    import_families(families)
    assert agreement.run_list(LIST_RUN - dt.timedelta(days=1)).state == "success"

    # The first family withdraws after its referral was sent: next week's run tells the Sociaal Huis once.
    families[0].withdrawn = TODAY
    import_families(families)
    assert agreement.run_list().state == "success"
    assert agreement.run_list().state == "success"  # cleared / re-run: no second notice
    [(name, data)] = agreement.outbox("intrekkingen_").items()
    rows = read_workbook(data, agreement.password)["Intrekkingen"]
    assert rows[0] == ["Doorverwijzingsnummer", "Datum intrekking"]
    assert [r[0] for r in rows[1:]] == [agreement.codes()[audit.subject_key(families[0].child)]]
    assert agreement.actions().count("referral.withdrawal_notified") == 1

    # No feedback within the term (0 days here): the deadline check flags the two still awaited.
    monkeypatch.setenv("WELFARE_EXCHANGE_REFERRAL_FEEDBACK_DAYS", "0")
    run = agreement.run_feedback(LIST_RUN + dt.timedelta(days=1))
    states = task_states(run)
    assert states["wait_for_feedback"] == "skipped" and states["check_feedback_deadline"] == "success", states
    with session_scope() as session:
        [fact] = session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "referral.feedback_overdue")).all()
        assert fact.counts["referrals"] == 2
    assert "DEADLINE MISSED" in caplog.text
    [alert] = webhook.received  # the operator is alerted once, with counts and the runbook, nothing personal
    assert alert["cause"] == "referral_feedback_overdue" and "2 referral(s)" in alert["reason"]
    assert "A referral awaits feedback" in alert["runbook"] and NAME not in json.dumps(alert)


def test_a_feedback_file_moved_by_a_try_that_died_before_recording_it_is_taken_from_received(agreement):
    """The try moved the file to received/ and died before the ledger said so: the retry finds it
    there (by its handle, never its name) instead of failing on an empty inbox."""
    from welfare_exchange import ledger
    from welfare_exchange.protocols import get
    from welfare_exchange.referral import delivery
    from welfare_exchange.transport import sftp

    data = feedback_file([("DV-AAAA-BBBB", "gecontacteerd", TODAY)], agreement.password)
    agreement.municipality.upload_request(data, "terugkoppeling_x.xlsx")
    with session_scope() as session:
        protocol = get(session, agreement.protocol_id)
    handle = delivery.waiting_feedback(protocol, settle_seconds=0.2)
    assert handle is not None and "terugkoppeling" not in handle
    with session_scope() as session:
        ledger.begin_side_effect(session, "take:test", kind="referral_feedback_received", exchange_id=None)
    sftp.move(sftp.sftp_hook(protocol.channel_connection), "inbox/terugkoppeling_x.xlsx", "received")  # then the try died

    got, remote = delivery.take_feedback(protocol, handle, key="take:test")
    assert got == data and remote == "received/terugkoppeling_x.xlsx"
    with session_scope() as session:
        assert ledger.is_done(session, "take:test")
    assert delivery.waiting_feedback(protocol, settle_seconds=0.2) is None
