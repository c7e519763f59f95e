"""``entitlements import``: validated row by row and against each other, then applied as versions — SQLite and PostgreSQL.

The files are built from synthetic numbers (``insz.make``). Assertions compare counts, line
numbers and booleans: no INSZ number may appear in test output.
"""

from __future__ import annotations

import csv
import datetime as dt
import pathlib
import time

import pytest
import sqlalchemy as sa

from welfare_exchange import insz
from welfare_exchange.cli import main
from welfare_exchange.db import get_engine
from welfare_exchange.entitlements import import_csv
from welfare_exchange.entitlements.store import REQUIRED_COLUMNS
from welfare_exchange.errors import InputError

HEADER = list(REQUIRED_COLUMNS)
CONTACT = ["beneficiary_email", "beneficiary_address_line", "beneficiary_postcode", "beneficiary_city"]

KID_A = insz.make(dt.date(2012, 5, 17), 101)
KID_B = insz.make(dt.date(2005, 1, 2), 102)  # born 2005: the number starts with 0
KID_C = insz.make(dt.date(2019, 11, 30), 103, bis=True)
MUM = insz.make(dt.date(1984, 3, 9), 104)
DAD = insz.make(dt.date(1980, 12, 1), 105)


def _rows() -> list[list[str]]:
    return [
        [KID_A, "2012-05-17", "11002", MUM, "sociale_toeslag", "2019-01-01", ""],
        [KID_A, "2012-05-17", "11002", MUM, "schooltoeslag", "2019-09-01", "2023-08-31"],
        [KID_B, "2005-01-02", "44021", MUM, "sociale_toeslag", "2019-01-01", "2021-06-30"],
        [KID_B, "2005-01-02", "44021", DAD, "sociale_toeslag", "2021-07-01", ""],
        [KID_C, "2019-11-30", "73111", DAD, "zorgtoeslag", "2020-04-01", ""],
    ]


def _write(path: pathlib.Path, rows: list[list[str]], header: list[str] = HEADER) -> pathlib.Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _store(url: str) -> list[tuple]:
    """The store's current knowledge as comparable tuples, ids replaced by numbers (kept in memory only)."""
    with get_engine(url).connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT c.insz, c.birth_date, c.nis_code, b.insz, e.supplement, e.start_date, e.end_date "
            "FROM entitlement e JOIN child c ON c.id = e.child_id JOIN beneficiary b ON b.id = e.beneficiary_id "
            "WHERE e.recorded_to IS NULL"
        )).all()
    return sorted(tuple("" if v is None else str(v) for v in row) for row in rows)


def test_import_then_again_changes_nothing(store_db, tmp_path):
    path = _write(tmp_path / "extract.csv", _rows())
    first = import_csv(path)
    assert first == {
        "rows": 5,
        "children_new": 3, "children_updated": 0,
        "beneficiaries_new": 2, "beneficiaries_updated": 0,
        "entitlements_new": 5, "entitlements_updated": 0, "entitlements_unchanged": 0, "entitlements_withdrawn": 0,
    }
    content = _store(store_db)
    matches = content == sorted(tuple(r) for r in _rows())
    assert matches

    second = import_csv(path)
    assert second["entitlements_new"] == second["entitlements_updated"] == 0
    assert second["entitlements_unchanged"] == 5
    assert second["children_new"] == second["children_updated"] == second["beneficiaries_new"] == 0
    unchanged = _store(store_db) == content
    assert unchanged


def test_a_changed_end_date_updates_the_period(store_db, tmp_path):
    import_csv(_write(tmp_path / "v1.csv", _rows()))
    rows = _rows()
    rows[0][6] = "2024-12-31"  # the ongoing sociale toeslag ended
    rows[3][6] = ""  # unchanged (still ongoing)
    rows[2][6] = ""  # an ended period turns out to be ongoing
    counts = import_csv(_write(tmp_path / "v2.csv", rows))
    assert counts["entitlements_updated"] == 2
    assert counts["entitlements_new"] == 0 and counts["entitlements_unchanged"] == 3
    updated = _store(store_db) == sorted(tuple(r) for r in rows)
    assert updated


def test_a_move_updates_the_childs_domicile(store_db, tmp_path):
    import_csv(_write(tmp_path / "v1.csv", _rows()))
    rows = _rows()
    for row in rows[:2]:
        row[2] = "12025"  # KID_A moved to Mechelen
    counts = import_csv(_write(tmp_path / "v2.csv", rows))
    assert counts["children_updated"] == 1 and counts["entitlements_unchanged"] == 5
    with get_engine(store_db).connect() as conn:
        nis = conn.scalar(sa.text("SELECT nis_code FROM child WHERE insz = :n"), {"n": KID_A})
    assert nis == "12025"


def test_optional_contact_columns(store_db, tmp_path):
    rows = [r + (["ouder@example.org", "", "", ""] if r[3] == MUM else ["", "Voorbeeldstraat 1", "2000", "Antwerpen"]) for r in _rows()]
    import_csv(_write(tmp_path / "contact.csv", rows, HEADER + CONTACT))
    with get_engine(store_db).connect() as conn:
        contacts = dict(conn.execute(sa.text("SELECT insz, coalesce(email, city) FROM beneficiary")).all())
    mum_ok, dad_ok = contacts.get(MUM) == "ouder@example.org", contacts.get(DAD) == "Antwerpen"
    assert mum_ok and dad_ok
    # The same file again: nothing to update.
    again = import_csv(_write(tmp_path / "contact.csv", rows, HEADER + CONTACT))
    assert again["beneficiaries_updated"] == 0


def test_bad_rows_refuse_the_whole_file_by_line_number(store_db, tmp_path):
    rows = _rows()
    bad_number = KID_B[:-1] + str((int(KID_B[-1]) + 1) % 10)  # wrong check digit
    rows[1][0] = bad_number  # line 3
    rows[3][2] = "21004"  # line 5: Brussel is not Flemish
    with pytest.raises(InputError) as caught:
        import_csv(_write(tmp_path / "bad.csv", rows))
    message = str(caught.value)
    assert "line 3: child_insz is not a valid INSZ" in message
    assert "line 5: child_nis is not the NIS code of a Flemish municipality" in message
    assert "2 bad rows" in message and "nothing was imported" in message
    # The message names lines and reasons, never values.
    leaked = len(insz.find_insz_shaped(message)) + (bad_number in message) + ("21004" in message)
    assert leaked == 0
    nothing = not _store(store_db)
    assert nothing
    with get_engine(store_db).connect() as conn:
        refused = conn.scalar(sa.text("SELECT count(*) FROM audit_record WHERE action = 'entitlements.imported' AND outcome = 'refused'"))
    assert refused == 1


@pytest.mark.parametrize(
    "line, change, reason",
    [
        (2, lambda r: r.__setitem__(0, r[0][1:]), "child_insz has 10 digits, not 11 (a spreadsheet may have dropped a leading 0)"),
        (4, lambda r: r.__setitem__(0, r[0][1:]), "child_insz has 10 digits, not 11"),
        (2, lambda r: r.__setitem__(3, "abc"), "beneficiary_insz contains characters other than digits"),
        (2, lambda r: r.__setitem__(1, "17/05/2012"), "child_birth_date is not an ISO date"),
        (2, lambda r: r.__setitem__(1, "2012-05-18"), "child_birth_date does not match the birth date in child_insz"),
        (2, lambda r: r.__setitem__(4, "kinderbijslag"), "supplement must be one of sociale_toeslag, zorgtoeslag, schooltoeslag"),
        (3, lambda r: r.__setitem__(6, "2019-08-31"), "end_date is before start_date"),
        (2, lambda r: r.__setitem__(5, "2019-02-30"), "start_date is not an ISO date"),
        (3, lambda r: r.append("extra"), "has 8 fields, the header has 7"),
    ],
)
def test_each_kind_of_bad_row_is_named(store_db, tmp_path, line, change, reason):
    rows = _rows()
    change(rows[line - 2])
    with pytest.raises(InputError) as caught:
        import_csv(_write(tmp_path / "bad.csv", rows))
    assert f"line {line}: {reason}" in str(caught.value)
    nothing = not _store(store_db)
    assert nothing


def test_rows_that_contradict_each_other(store_db, tmp_path):
    rows = _rows()
    rows.append([KID_A, "2012-05-17", "11002", MUM, "sociale_toeslag", "2019-01-01", "2020-01-01"])  # line 7 vs line 2
    rows.append([KID_C, "2019-11-30", "44021", DAD, "zorgtoeslag", "2021-04-01", ""])  # line 8: other domicile than line 6
    rows.append(list(_rows()[4]))  # line 9: an exact duplicate is harmless
    with pytest.raises(InputError) as caught:
        import_csv(_write(tmp_path / "bad.csv", rows))
    message = str(caught.value)
    assert "line 7: end_date conflicts with line 2" in message
    assert "line 8: child_birth_date or child_nis differs from line 6" in message
    assert "2 bad rows" in message


@pytest.mark.parametrize(
    "header",
    [
        HEADER[:-1],
        list(reversed(HEADER)),
        HEADER + ["beneficiary_name"],
        HEADER + ["beneficiary_email", "beneficiary_email"],
    ],
)
def test_a_wrong_header_is_refused(store_db, tmp_path, header):
    with pytest.raises(InputError, match="header"):
        import_csv(_write(tmp_path / "bad.csv", [], header))


def test_missing_empty_and_header_only_files(store_db, tmp_path):
    with pytest.raises(InputError, match="not found"):
        import_csv(tmp_path / "absent.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty"):
        import_csv(tmp_path / "empty.csv")
    counts = import_csv(_write(tmp_path / "header.csv", []))
    assert counts["rows"] == 0 and counts["entitlements_new"] == 0


def test_excel_bom_and_crlf_are_accepted(store_db, tmp_path):
    text = ",".join(HEADER) + "\r\n" + "\r\n".join(",".join(r) for r in _rows()) + "\r\n"
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert import_csv(path)["entitlements_new"] == 5


def test_cli_import(store_db, tmp_path, capsys):
    path = _write(tmp_path / "extract.csv", _rows())
    assert main(["entitlements", "import", str(path), "--no-progress"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("imported 5 rows (full extract): 3 new and 0 updated children") and out.out.count("\n") == 1
    rows = _rows()
    rows[2][0] = "123"
    assert main(["entitlements", "import", str(_write(tmp_path / "bad.csv", rows))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 4: child_insz does not have 11 digits" in err
    leaked = len(insz.find_insz_shaped(out.out + out.err + err))
    assert leaked == 0


def test_twenty_thousand_rows_in_bulk(store_db, tmp_path):
    """A large file goes in bulk: seconds, not minutes (the 200k-row figure is in bench/)."""
    rows = []
    for i in range(10_000):
        born = dt.date(2000, 1, 1) + dt.timedelta(days=i % 9000)
        child = insz.make(born, 1 + i // 9000 + 500)
        parent = insz.make(dt.date(1970, 1, 1) + dt.timedelta(days=i // 2), 600)
        rows.append([child, born.isoformat(), "11002" if i % 3 else "44021", parent, "sociale_toeslag", "2019-01-01", ""])
        rows.append([child, born.isoformat(), "11002" if i % 3 else "44021", parent, "schooltoeslag", "2020-09-01", "2021-08-31"])
    path = _write(tmp_path / "large.csv", rows)
    started = time.monotonic()
    counts = import_csv(path)
    first = time.monotonic() - started
    assert counts["entitlements_new"] == 20_000 and counts["children_new"] == 10_000 and counts["beneficiaries_new"] == 5_000
    started = time.monotonic()
    again = import_csv(path)
    assert again["entitlements_unchanged"] == 20_000
    assert first < 60 and time.monotonic() - started < 60


def test_the_fast_validation_path_never_accepts_what_stdnum_refuses():
    """``_surely_valid`` is only a shortcut: whatever it accepts, stdnum accepts with that birth date."""
    import random

    from welfare_exchange.entitlements.store import _surely_valid

    rng = random.Random(5)
    candidates = []
    for _ in range(3000):
        born = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(365 * 76))
        number = insz.make(born, rng.randint(1, 998), bis=rng.random() < 0.3, sex_known=rng.random() < 0.5)
        candidates.append((number, born))
        candidates.append((number, born + dt.timedelta(days=1)))  # wrong birth date
        candidates.append((number[:9] + f"{(int(number[9:]) + 1) % 100:02d}", born))  # wrong check digits
        candidates.append(("".join(rng.choice("0123456789") for _ in range(11)), None))  # noise
    accepted = wrong = 0
    for number, born in candidates:
        if _surely_valid(number, born):
            accepted += 1
            wrong += not insz.is_valid(number) or (born is not None and insz.birth_date(number) != born)
        if _surely_valid(number, None):
            wrong += not insz.is_valid(number)
    assert wrong == 0
    assert accepted >= 3000  # and it does take the fast path for the ordinary case


def test_contact_details_that_contradict_each_other(store_db, tmp_path):
    rows = [r + (["ouder@example.org", "", "", ""] if r[3] == MUM else ["", "Voorbeeldstraat 1", "2000", "Antwerpen"]) for r in _rows()]
    rows[2][7] = "andere@example.org"  # line 4: MUM's e-mail differs from line 2
    rows[4][8] = ""  # line 6: DAD without the street line 5 gives
    with pytest.raises(InputError) as caught:
        import_csv(_write(tmp_path / "contact.csv", rows, HEADER + CONTACT))
    message = str(caught.value)
    assert "line 4: beneficiary contact details differ from line 2 for the same beneficiary" in message
    assert "line 6: beneficiary contact details differ from line 5 for the same beneficiary" in message
    assert "2 bad rows" in message and "example.org" not in message
