"""Subject access lists a person's referrals and feedback; no name or INSZ leaks anywhere on the way."""

from __future__ import annotations

import datetime as dt
import json
import logging

import sqlalchemy as sa

from tests.fixtures.pii_scan import insz_findings
from tests.referral.builders import NAME, SYSTEM, TODAY, USER, candidate_csv, family, feedback_file, password
from tests.referral.conftest import refer
from welfare_exchange import audit
from welfare_exchange.cli import main
from welfare_exchange.db import get_engine, session_scope
from welfare_exchange.db.models import Exchange
from welfare_exchange.errors import InputError
from welfare_exchange.referral import candidates, evaluation, feedback, withdrawal
from welfare_exchange.settings import get_settings


def _insz_file(tmp_path, *numbers):
    path = tmp_path / "persons.txt"
    path.write_text("".join(f"{n}\n" for n in numbers))
    return path


def test_subject_access_lists_referrals_and_feedback_for_child_and_parent(project_db, tmp_path, capsys):
    referred = refer([family(), family(), family(parent=None)])
    first = referred.families[0]
    with session_scope() as session:
        feedback.receive_feedback(
            session, referred.protocol(session),
            feedback_file([(referred.codes[0], "ondersteuning gestart", dt.date(2026, 11, 9))], referred.key),
            password=referred.key, on=dt.date(2026, 11, 20), actor=SYSTEM,
        )
    stranger = family()
    capsys.readouterr()
    path = _insz_file(tmp_path, first.child, first.parent, stranger.child)
    assert main(["subject-access", "--insz-file", str(path), "--json"]) == 0
    persons = json.loads(capsys.readouterr().out)["persons"]
    child, parent, nobody = persons
    assert child["exchanges"] == [] and parent["exchanges"] == []  # referrals are answered in their own section
    (as_child,) = child["referrals"]["referrals"]
    assert as_child["role"] == "child" and as_child["referral_id"] == referred.codes[0]
    assert as_child["sent_on"] == "2026-11-02" and as_child["sociaal_huis"] == "Gent"
    assert as_child["feedback"] == [{"outcome": "ondersteuning gestart", "date": "2026-11-09"}]
    assert "parent_name" in as_child["fields"] and as_child["agreement_ref"] == "SO/2026/3"
    assert [r["role"] for r in parent["referrals"]["referrals"]] == ["parent"]
    actions = [f["action"] for f in child["referrals"]["facts"]]
    assert actions == ["referral.candidates_imported", "referral.list_built", "referral.list_sent",
                       "referral.feedback_recorded"]
    assert child["referrals"]["candidate"]["consent_given_on"] == "2026-09-20"
    assert nobody["referrals"] == {"facts": [], "referrals": [], "candidate": None}
    assert main(["subject-access", "--insz-file", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"referral {referred.codes[0]}" in text and "feedback: ondersteuning gestart on 2026-11-09" in text
    assert "referrals to a Sociaal Huis: none." in text
    assert NAME not in text and not insz_findings(text)


def test_no_name_or_insz_in_logs_exceptions_audit_ledger_or_staging(project_db, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    families = [family() for _ in range(11)]
    referred = refer(families)
    errors = []
    with session_scope() as session:  # a refused feedback file, a refused candidate import
        protocol = referred.protocol(session)
        refused = feedback.receive_feedback(
            session, protocol, feedback_file([(referred.codes[0], NAME, families[0].child)], referred.key),
            password=referred.key, on=dt.date(2026, 11, 20), actor=SYSTEM,
        )
        errors.append(str(refused.refused))
        errors.append(feedback.refusal_report(protocol, session.get(Exchange, refused.exchange_id), refused.refused).decode())
        wrong = feedback.receive_feedback(session, protocol, feedback_file([], password()), password=referred.key,
                                          on=dt.date(2026, 11, 20), actor=SYSTEM)
        errors.append(str(wrong.refused))
    bad = family(extra={"parent_email": NAME, "child_nis": families[0].child})
    try:
        with session_scope() as session:
            candidates.import_candidates(session, candidate_csv([bad]), today=TODAY, actor=USER)
    except InputError as exc:
        errors.append(str(exc))
        with session_scope() as session:
            candidates.record_refusal(session, candidate_csv([bad]), exc, actor=USER)
    families[1].withdrawn = dt.date(2026, 11, 10)
    with session_scope() as session:
        candidates.import_candidates(session, candidate_csv(families), today=TODAY, actor=USER)
    with session_scope() as session:
        protocol = referred.protocol(session)
        withdrawal.build_withdrawal_notice(session, protocol, dt.date(2026, 11, 16), password=referred.key, actor=SYSTEM)
        errors.append(evaluation.evaluation_report(session, protocol, dt.date(2026, 12, 1)).decode())
    capsys.readouterr()
    assert main(["referral", "select", "--protocol", str(referred.protocol_id), "--on", "2026-11-16"]) == 0
    assert main(["referral", "awaiting", "--protocol", str(referred.protocol_id), "--on", "2027-01-31"]) == 0
    out = capsys.readouterr()

    personal = [NAME, *(f.child for f in families), *(f.parent for f in families), families[0].email, families[0].phone]
    with get_engine(project_db).connect() as conn:
        tables = {
            name: repr(conn.execute(sa.text(f"SELECT * FROM {name}")).all())
            for name in ("audit_record", "exchange", "side_effect", "referral", "referral_feedback", "referral_candidate",
                         "protocol")
        }
    texts = {"log": caplog.text, "stdout": out.out, "stderr": out.err, **{f"error {i}": e for i, e in enumerate(errors)},
             **tables}
    for where, text in texts.items():
        assert not insz_findings(text), f"INSZ in {where}"
        for value in personal:
            assert value not in text, f"personal data in {where}"
    staged = [p for p in get_settings().staging_dir.rglob("*") if p.is_file()]
    assert len(staged) == 2  # the list and the notice, each sealed with the staging key
    for path in staged:
        raw = path.read_bytes()
        assert not raw.startswith((b"PK", b"\xd0\xcf\x11\xe0")) and NAME.encode() not in raw
    with session_scope() as session:
        assert audit.verify(session).ok
