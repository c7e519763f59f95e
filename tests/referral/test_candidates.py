"""The candidate import: refused whole by line number (never a value), stored minimal, consent merged safely."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from tests.referral.builders import COLUMNS, NAME, TODAY, USER, candidate_csv, family
from welfare_exchange import audit, insz
from welfare_exchange.cli import main
from welfare_exchange.db import get_engine, session_scope
from welfare_exchange.db.models import AuditRecord, ReferralCandidate
from welfare_exchange.errors import InputError
from welfare_exchange.referral import candidates, contacts


def _import(data: bytes, today: dt.date = TODAY):
    with session_scope() as session:
        return candidates.import_candidates(session, data, today=today, actor=USER)


def test_import_stores_no_insz_no_day_of_birth_and_seals_the_contact(project_db):
    families = [family(), family(criteria=("income",)), family(given=None)]
    summary = _import(candidate_csv(families))
    assert summary.counts() == {"rows": 3, "new": 3, "updated": 0, "with_consent": 2, "withdrawn": 0,
                                "withdrawals_kept": 0, "kansarmoede": 2}
    with session_scope() as session:
        rows = session.scalars(sa.select(ReferralCandidate).order_by(ReferralCandidate.id)).all()
        assert [bytes(r.family_ref) for r in rows] == [audit.subject_key(f.child) for f in families]
        assert rows[0].birth_month == families[0].born.strftime("%Y-%m")
        assert rows[0].criteria == ["income", "housing", "health"] and rows[0].criteria_count == 3
        assert contacts.unseal(rows[0].contact_sealed).name == NAME
        fact = session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "referral.candidates_imported")).one()
        assert fact.subjects_count == 6  # three children and their three parents, as keyed references
    # Nothing in the database holds a number or the name in the clear.
    with get_engine(project_db).connect() as conn:
        dump = repr(conn.execute(sa.text("SELECT * FROM referral_candidate")).all())
    assert NAME not in dump and not insz.find_insz_shaped(dump)
    assert all(f.child not in dump for f in families)


def test_bad_lines_refuse_the_whole_file_by_line_number_without_values(project_db):
    good = family()
    bad = [
        family(extra={"child_insz": good.child[:10] + str((int(good.child[10]) + 1) % 10)}),  # check digits
        family(extra={"child_nis": "99999"}),
        family(extra={"criterion_income": "ja"}),
        family(given=dt.date(2026, 10, 1), withdrawn=dt.date(2026, 9, 1)),
        family(given=TODAY + dt.timedelta(days=1)),
        family(extra={"parent_name": ""}),
        family(address=("", "", ""), phone="", email=""),
        family(extra={"parent_email": NAME}),
        family(extra={"child_birth_date": "2026-08-32"}),
    ]
    repeated = family()
    repeated.child, repeated.born = good.child, good.born
    data = candidate_csv([good, *bad, repeated])
    with pytest.raises(candidates.CandidateImportRefused) as caught:
        _import(data)
    err = caught.value
    assert [line for line, _ in err.problems] == list(range(3, 3 + len(bad) + 1))
    message = str(err)
    assert "nothing was imported" in message and "line 3: child_insz is not a valid INSZ" in message
    assert "line 4: child_nis is not the NIS code" in message and "line 5: criterion_income must be 1" in message
    assert "consent_withdrawn_on lies before consent_given_on" in message
    assert "consent_given_on lies in the future" in message and "no way to contact the parent" in message
    assert f"line {3 + len(bad)}: names the same child as line 2" in message
    assert NAME not in message and not insz.find_insz_shaped(message) and "99999" not in message
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ReferralCandidate)) == 0


def test_unknown_columns_are_refused_without_echoing_them(sqlite_db):
    data = candidate_csv([family()], columns=(*COLUMNS, "nurse_notes"))
    with pytest.raises(InputError, match=r"column\(s\) 19 .* not referral columns") as caught:
        _import(data)
    assert "nurse_notes" not in str(caught.value)


def test_reimport_updates_keeps_withdrawals_and_is_idempotent(project_db):
    one, two = family(), family(withdrawn=dt.date(2026, 10, 20))
    _import(candidate_csv([one, two]))
    # A later file that leaves the withdrawal out does not undo it; a consent dated after it does.
    two_again = family()
    two_again.child, two_again.born, two_again.given = two.child, two.born, dt.date(2026, 9, 20)
    one.criteria = ("income", "housing")
    summary = _import(candidate_csv([one, two_again]))
    assert summary.updated == 2 and summary.withdrawals_kept == 1 and summary.kansarmoede == 1
    with session_scope() as session:
        rows = {bytes(r.family_ref): r for r in session.scalars(sa.select(ReferralCandidate))}
        assert rows[audit.subject_key(two.child)].consent_withdrawn_on == dt.date(2026, 10, 20)
        assert rows[audit.subject_key(one.child)].criteria_count == 2
    two_again.given = dt.date(2026, 11, 5)
    _import(candidate_csv([two_again]))
    with session_scope() as session:
        row = session.scalars(sa.select(ReferralCandidate).where(ReferralCandidate.family_ref == audit.subject_key(two.child))).one()
        assert (row.consent_given_on, row.consent_withdrawn_on) == (dt.date(2026, 11, 5), None)


def test_the_same_file_twice_changes_nothing(sqlite_db):
    data = candidate_csv([family()])
    _import(data)
    assert _import(data).already_imported
    with session_scope() as session:
        assert session.scalar(
            sa.select(sa.func.count()).select_from(AuditRecord).where(AuditRecord.action == "referral.candidates_imported")
        ) == 1


def test_cli_import_refusal_is_audited_and_prints_no_personal_data(sqlite_db, tmp_path, capsys):
    path = tmp_path / "kandidaten.csv"
    path.write_bytes(candidate_csv([family(extra={"child_nis": "1234"})]))
    assert main(["referral", "import", str(path), "--today", TODAY.isoformat()]) == 2
    err = capsys.readouterr().err
    assert "line 2: child_nis" in err and NAME not in err
    with session_scope() as session:
        outcome, message = session.execute(
            sa.select(AuditRecord.outcome, AuditRecord.message).where(AuditRecord.action == "referral.candidates_imported")
        ).one()
    assert outcome == "refused" and NAME not in message
    path.write_bytes(candidate_csv([family()]))
    assert main(["referral", "import", str(path), "--today", TODAY.isoformat()]) == 0
    assert "new 1" in capsys.readouterr().out
