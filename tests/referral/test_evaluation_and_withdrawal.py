"""The evaluation report (counts, suppressed as in Method 2), referrals awaiting feedback, withdrawal notices."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from tests.referral.builders import RUN, SYSTEM, TODAY, USER, candidate_csv, family, feedback_file, read_workbook
from tests.referral.conftest import refer
from welfare_exchange import ledger
from welfare_exchange.cli import main
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange, Referral
from welfare_exchange.outreach.report import suppress
from welfare_exchange.referral import candidates, evaluation, feedback, withdrawal

ON = dt.date(2026, 12, 20)


def _feedback(referred, rows, on=ON):
    with session_scope() as session:
        result = feedback.receive_feedback(session, referred.protocol(session), feedback_file(rows, referred.key),
                                           password=referred.key, on=on, actor=SYSTEM)
    assert result.refused is None, result.refused
    return result


def test_evaluation_counts_latest_outcomes_and_suppresses_small_ones(project_db):
    families = [family(criteria=("income", "housing", "health")) for _ in range(14)]
    families += [family(criteria=("income", "education", "work", "stimulation")) for _ in range(11)]
    referred = refer(families)
    c = referred.codes
    day = dt.date(2026, 11, 10)
    rows = [(code, "gecontacteerd", day) for code in c[:18]]
    rows += [(code, "onbereikbaar", day) for code in c[18:21]]
    _feedback(referred, rows)
    # Later outcomes replace earlier ones in the counts (each referral counted once, by its latest).
    _feedback(referred, [(code, "ondersteuning gestart", dt.date(2026, 12, 1)) for code in c[:12]])
    with session_scope() as session:
        result = evaluation.evaluate(session, referred.protocol(session), ON)
        text, shown = evaluation.render(referred.protocol(session), result, ON)
    assert result.referrals == 25
    assert result.by_outcome == {"contacted": 6, "support_started": 12, "declined": 0, "unreachable": 3, "moved": 0,
                                 "no_feedback": 4}
    assert result.by_criterion["income"] == result.by_outcome
    assert result.by_criterion["housing"] == {"contacted": 2, "support_started": 12, "declined": 0, "unreachable": 0,
                                              "moved": 0, "no_feedback": 0}
    assert sum(result.by_criterion["work"].values()) == 11
    # Exactly Method 2's suppression, applied to each partition.
    assert shown["outcomes"] == suppress(result.by_outcome)
    assert shown["outcomes"]["contacted"] == "<10" and shown["outcomes"]["support_started"] == "12"
    assert shown["work"] == suppress(result.by_criterion["work"])
    text = text.decode()
    assert "Totaal doorverwezen" in text and " 25" in text and "<10" in text
    for code in c:
        assert code not in text
    # Before the later feedback, as of an earlier day, the first outcomes count.
    with session_scope() as session:
        earlier = evaluation.evaluate(session, referred.protocol(session), dt.date(2026, 11, 20))
    assert earlier.by_outcome["contacted"] == 18 and earlier.by_outcome["support_started"] == 0


def test_referrals_without_feedback_after_the_term_are_listed(project_db, monkeypatch):
    monkeypatch.setenv("WELFARE_EXCHANGE_REFERRAL_FEEDBACK_DAYS", "30")
    referred = refer([family() for _ in range(4)])
    _feedback(referred, [(referred.codes[0], "verhuisd", dt.date(2026, 11, 20))], on=dt.date(2026, 11, 25))
    with session_scope() as session:
        protocol = referred.protocol(session)
        assert evaluation.awaiting_feedback(session, protocol, dt.date(2026, 12, 2)) == []  # 30 days not yet over
        waiting = evaluation.awaiting_feedback(session, protocol, dt.date(2026, 12, 3))
        assert sorted(w.code for w in waiting) == sorted(referred.codes[1:]) and {w.days for w in waiting} == {31}
        assert len(evaluation.awaiting_feedback(session, protocol, dt.date(2026, 12, 3), term_days=60)) == 0


def test_a_withdrawal_after_delivery_gives_one_notice(project_db, tmp_path, capsys):
    kept, leaving = family(), family()
    referred = refer([kept, leaving])
    key = referred.key

    def notice(on):
        with session_scope() as session:
            return withdrawal.build_withdrawal_notice(session, referred.protocol(session), on, password=key, actor=SYSTEM)

    assert notice(RUN + dt.timedelta(days=7)) is None
    leaving.withdrawn = dt.date(2026, 11, 12)
    with session_scope() as session:
        candidates.import_candidates(session, candidate_csv([kept, leaving]), today=TODAY, actor=USER)
    with session_scope() as session:  # withdrawn: no longer awaited, even before the notice is built
        waiting = evaluation.awaiting_feedback(session, referred.protocol(session), dt.date(2027, 3, 1))
        assert [w.code for w in waiting] == [referred.codes[0]]
    first = notice(dt.date(2026, 11, 16))
    assert first.rows == 1
    sheets = read_workbook(first.data, key)
    assert sheets["Intrekkingen"] == [["Doorverwijzingsnummer", "Datum intrekking"],
                                      [referred.codes[1], dt.date(2026, 11, 12)]]
    assert notice(dt.date(2026, 11, 16)).data == first.data  # the same run again: the same bytes
    assert notice(dt.date(2026, 11, 23)) is None  # a later run: already noticed, never again
    with session_scope() as session:
        ledger.begin_side_effect(session, withdrawal.notice_delivery_key(first.exchange_id),
                                 kind=withdrawal.DELIVERY_KIND, exchange_id=first.exchange_id)
        ledger.complete_side_effect(session, withdrawal.notice_delivery_key(first.exchange_id))
        withdrawal.mark_notice_sent(session, first.exchange_id, actor=SYSTEM)
    with session_scope() as session:
        withdrawal.mark_notice_sent(session, first.exchange_id, actor=SYSTEM)
        referral = session.scalars(sa.select(Referral).where(Referral.code == referred.codes[1])).one()
        assert referral.withdrawn_on == dt.date(2026, 11, 12) and referral.notice_exchange_id == first.exchange_id
        assert session.get(Exchange, first.exchange_id).state == "delivered"
        actions = session.scalars(sa.select(AuditRecord.action).where(AuditRecord.action.like("referral.withdrawal%"))).all()
        assert actions == ["referral.withdrawal_notice_built", "referral.withdrawal_notified"]
        # A withdrawn family is no longer awaited.
        waiting = evaluation.awaiting_feedback(session, referred.protocol(session), dt.date(2027, 3, 1))
        assert [w.code for w in waiting] == [referred.codes[0]]
    capsys.readouterr()
    assert main(["referral", "evaluation", "--protocol", str(referred.protocol_id), "--until", "2026-12-01"]) == 0
    assert "<10" in capsys.readouterr().out
