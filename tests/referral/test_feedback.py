"""Feedback from the Sociaal Huis: validated like a request, refused by code and line, recorded once."""

from __future__ import annotations

import datetime as dt
import io

import pytest
import sqlalchemy as sa
from python_calamine import CalamineWorkbook

from tests.referral.builders import NAME, RUN, SYSTEM, TODAY, USER, candidate_csv, family, feedback_file, password
from welfare_exchange import audit
from welfare_exchange.cli import main
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange, Referral, ReferralFeedback
from welfare_exchange.referral import candidates, feedback, listing
from welfare_exchange.referral.listing import new_code

ON = dt.date(2026, 11, 20)


def _receive(referred, data, *, key=None, on=ON, actor=SYSTEM):
    with session_scope() as session:
        return feedback.receive_feedback(session, referred.protocol(session), data, password=key or referred.key, on=on, actor=actor)


def _stored() -> list[tuple[int, str, dt.date]]:
    with session_scope() as session:
        return session.execute(
            sa.select(ReferralFeedback.referral_id, ReferralFeedback.outcome, ReferralFeedback.outcome_date)
            .order_by(ReferralFeedback.id)
        ).tuples().all()


def test_a_valid_file_is_recorded_once_and_audited(referred):
    c = referred.codes
    rows = [
        (c[0], "gecontacteerd", dt.date(2026, 11, 5)),
        (c[1], "Support started", "2026-11-06"),
        (c[2].lower(), "GEWEIGERD", dt.date(2026, 11, 7)),
        (c[3], "onbereikbaar", dt.date(2026, 11, 8)),
        (c[4], "moved", dt.date(2026, 11, 9)),
        (c[0], "gecontacteerd", dt.date(2026, 11, 5)),  # the same row again: idempotent
    ]
    result = _receive(referred, feedback_file(rows, referred.key))
    assert result.refused is None and result.duplicate_of is None
    assert result.counts == {"rows": 5, "duplicate_rows": 1, "contacted": 1, "support_started": 1, "declined": 1,
                             "unreachable": 1, "moved": 1}
    assert len(_stored()) == 5
    with session_scope() as session:
        exchange = session.get(Exchange, result.exchange_id)
        assert exchange.state == "validated" and exchange.request_name is None
        fact = session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "referral.feedback_recorded")).one()
        assert fact.subjects_count == 5 and fact.exchange_id == result.exchange_id
    # A new file repeating known outcomes and adding a later one: only the new one is recorded.
    later = _receive(referred, feedback_file([(c[0], "gecontacteerd", dt.date(2026, 11, 5)),
                                              (c[1], "ondersteuning gestart", dt.date(2026, 11, 6))], referred.key))
    assert later.counts.get("already_recorded") == 2 and len(_stored()) == 5
    progress = _receive(referred, feedback_file([(c[0], "ondersteuning gestart", dt.date(2026, 11, 15))], referred.key))
    assert progress.counts["support_started"] == 1 and len(_stored()) == 6


def test_the_same_file_in_a_later_run_is_a_duplicate(referred):
    data = feedback_file([(referred.codes[0], "gecontacteerd", dt.date(2026, 11, 5))], referred.key)
    first = _receive(referred, data)
    second = _receive(referred, data, actor=audit.Actor(type="system", name="airflow", run_id="manual__2"))
    assert second.duplicate_of == first.exchange_id and len(_stored()) == 1
    rerun = _receive(referred, data)  # the same run again (a cleared task): no new fact, no second row
    assert rerun.exchange_id == first.exchange_id and len(_stored()) == 1


@pytest.mark.parametrize(
    "case, code",
    [
        ("unknown id", "unknown_referral"),
        ("bad outcome", "bad_outcome"),
        ("future date", "bad_date"),
        ("date before the referral", "bad_date"),
        ("conflicting rows", "conflicting_rows"),
        ("bad columns", "missing_columns"),
        ("wrong password", "wrong_password"),
        ("not encrypted", "not_encrypted"),
        ("not excel", "not_excel"),
        ("empty", "empty"),
    ],
)
def test_bad_files_are_refused_with_a_clear_code_and_nothing_recorded(referred, case, code):
    c, good = referred.codes, (referred.codes[0], "gecontacteerd", dt.date(2026, 11, 5))
    key = referred.key
    data = {
        "unknown id": lambda: feedback_file([good, (new_code(), "gecontacteerd", dt.date(2026, 11, 5))], key),
        "bad outcome": lambda: feedback_file([good, (c[1], NAME, dt.date(2026, 11, 5))], key),
        "future date": lambda: feedback_file([(c[1], "verhuisd", ON + dt.timedelta(days=1))], key),
        "date before the referral": lambda: feedback_file([(c[1], "verhuisd", dt.date(2026, 11, 1))], key),
        "conflicting rows": lambda: feedback_file([good, (c[0], "verhuisd", dt.date(2026, 11, 6))], key),
        "bad columns": lambda: feedback_file([good], key, headings=("Doorverwijzingsnummer", "Opmerking", "Datum")),
        "wrong password": lambda: feedback_file([good], password()),
        "not encrypted": lambda: feedback_file([good], None),
        "not excel": lambda: b"%PDF-1.7 not a workbook",
        "empty": lambda: feedback_file([], key),
    }[case]()
    result = _receive(referred, data)
    assert result.refused is not None and result.refused.code == code
    message = str(result.refused)
    assert "nothing was recorded" in message and NAME not in message
    assert not any(code_ in message for code_ in c)  # ids are never echoed either
    if code in feedback.ROW_REASONS:
        assert result.refused.lines[code] and f"line(s) {result.refused.lines[code][0]}" in message
    assert _stored() == []
    with session_scope() as session:
        exchange = session.get(Exchange, result.exchange_id)
        assert (exchange.state, exchange.failure_code) == ("quarantined", code)
        fact = session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "referral.feedback_refused")).one()
        assert fact.outcome == "refused" and NAME not in fact.message
        report = feedback.refusal_report(referred.protocol(session), exchange, result.refused).decode()
    assert f"reason: {code}" in report and NAME not in report


def test_unknown_ids_are_named_by_line(referred):
    rows = [(referred.codes[0], "gecontacteerd", dt.date(2026, 11, 5)), (new_code(), "verhuisd", dt.date(2026, 11, 5)),
            (referred.codes[1], "verhuisd", dt.date(2026, 11, 5)), (new_code(), "verhuisd", dt.date(2026, 11, 5))]
    refused = _receive(referred, feedback_file(rows, referred.key)).refused
    assert refused.lines == {"unknown_referral": [3, 5]}


def test_the_template_is_what_the_reader_accepts(referred, tmp_path, capsys):
    out = tmp_path / "sjabloon.xlsx"
    assert main(["referral", "feedback-template", "--out", str(out), "--protocol", str(referred.protocol_id)]) == 0
    book = CalamineWorkbook.from_filelike(io.BytesIO(out.read_bytes()))
    rows = book.get_sheet_by_name("Terugkoppeling").to_python()
    assert rows[0] == ["Doorverwijzingsnummer", "Resultaat", "Datum"]
    assert sorted(r[0] for r in rows[1:]) == sorted(referred.codes)
    filled = [(r[0], "gecontacteerd", "2026-11-05") for r in rows[1:4]]
    result = _receive(referred, feedback_file(filled, referred.key))
    assert result.counts["contacted"] == 3
    # check-feedback validates without recording
    path, key_file = tmp_path / "terugkoppeling.xlsx", tmp_path / "key"
    path.write_bytes(feedback_file([(referred.codes[5], "verhuisd", "2026-11-05")], referred.key))
    key_file.write_text(referred.key)
    capsys.readouterr()
    assert main(["referral", "check-feedback", str(path), "--protocol", str(referred.protocol_id),
                 "--password-file", str(key_file), "--on", ON.isoformat()]) == 0
    assert "1 referral(s)" in capsys.readouterr().out and len(_stored()) == 3


def test_a_referral_listed_but_never_sent_is_unknown_to_the_sociaal_huis(referred):
    with session_scope() as session:
        candidates.import_candidates(session, candidate_csv([family()]), today=TODAY, actor=USER)
    with session_scope() as session:
        built = listing.build_referral_list(session, referred.protocol(session), RUN + dt.timedelta(days=7),
                                            password=referred.key, actor=SYSTEM)
        unsent = session.scalars(sa.select(Referral.code).where(Referral.exchange_id == built.exchange_id)).one()
    refused = _receive(referred, feedback_file([(unsent, "gecontacteerd", dt.date(2026, 11, 12))], referred.key)).refused
    assert refused.code == "unknown_referral" and refused.lines == {"unknown_referral": [2]}
