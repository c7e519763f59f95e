"""Data subjects' rights after real Method 1 exchanges: access finds exactly the exchanges that
included a person; erasure rewrites what was not delivered and says what cannot be erased.

INSZ files are written at test time under tmp_path; the log scanner checks that no command
output contains a number.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.exchange.builders import encrypted_request, expected_pairs
from tests.exchange.conftest import EXCHANGE_DATE, LOGICAL_DATE
from tests.retention.helpers import exchange as make_exchange
from tests.retention.helpers import records, verify
from welfare_exchange import audit, insz
from welfare_exchange.cli import main
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Exchange, Protocol
from welfare_exchange.exchange import matching
from welfare_exchange.staging import Staging

pytestmark = [pytest.mark.sftp]


def _insz_file(tmp_path, *numbers: str, name: str = "persons.txt"):
    path = tmp_path / name
    path.write_text("".join(f"{n}\n" for n in numbers))
    return path


def _access(capsys, path) -> list[list[int]]:
    capsys.readouterr()
    assert main(["subject-access", "--insz-file", str(path), "--json"]) == 0
    persons = json.loads(capsys.readouterr().out)["persons"]
    return [[e["exchange_id"] for e in p["exchanges"]] for p in persons], persons


def test_subject_access_returns_exactly_the_exchanges_that_included_the_person(method1, tmp_path, capsys):
    children = [n for n, _ in method1.world.children]
    first, second = children[:40], children[30:70]  # children 30..39 are in both requests
    method1.municipality.upload_request(encrypted_request(first, method1.password), "eerste.xlsx")
    assert method1.run().state == "success"
    method1.municipality.upload_request(encrypted_request(second, method1.password), "tweede.xlsx")
    assert method1.run(LOGICAL_DATE + dt.timedelta(days=1)).state == "success"
    one, two = [e.id for e in method1.exchanges()]

    pairs = expected_pairs(method1.world, set(first), EXCHANGE_DATE)
    in_result = next(child for child, *_ in pairs if child in first[:30])
    beneficiary = next(b for c, b, *_ in pairs if c == in_result)
    requested_only = next(c for c in first[:30] if c not in {p[0] for p in pairs})
    in_both = children[35]
    stranger = children[200]  # in the store, never requested
    unknown = insz.make(dt.date(2015, 5, 5), 777)  # nowhere at all

    ids, persons = _access(capsys, _insz_file(tmp_path, in_result, beneficiary, requested_only, in_both, stranger, unknown))
    # The beneficiary may also be the parent of a child in the second request.
    second_pairs = expected_pairs(method1.world, set(second), EXCHANGE_DATE + dt.timedelta(days=1))
    beneficiary_exchanges = [one] + ([two] if any(b == beneficiary for _, b, *_ in second_pairs) else [])
    assert ids == [[one], beneficiary_exchanges, [one], [one, two], [], []]

    by_line = {p["line"]: p for p in persons}
    [disclosure] = by_line[1]["exchanges"]
    assert disclosure["roles"] == ["requested", "result_child"]
    assert disclosure["delivered"] is True and disclosure["exchange_date"] == EXCHANGE_DATE.isoformat()
    assert disclosure["municipality"] == f"Testgemeente {method1.municipality.nis}"
    assert disclosure["fields"] and "INSZ kind" in disclosure["data_categories"]
    with session_scope() as session:
        protocol = session.get(Protocol, method1.protocol_id)
        assert disclosure["purpose"] == protocol.purpose and disclosure["legal_basis"] == protocol.legal_basis
    assert by_line[2]["exchanges"][0]["roles"] == ["result_beneficiary"]
    assert by_line[3]["exchanges"][0]["roles"] == ["requested"] and by_line[3]["exchanges"][0]["fields"] == []

    # The text form names lines, never numbers; the request itself is audited by reference only.
    assert main(["subject-access", "--insz-file", str(_insz_file(tmp_path, stranger, name="one.txt"))]) == 0
    assert "no exchange in this system included this person's data" in capsys.readouterr().out
    [first_request, _] = records("subject.access_request")
    assert first_request.subjects_count == 6 and first_request.exchange_id is None
    assert verify()


def test_subject_erase_rewrites_undelivered_staging_and_states_what_cannot_be_erased(method1, tmp_path, capsys):
    children = [n for n, _ in method1.world.children]
    requested = children[:40]
    method1.municipality.upload_request(encrypted_request(requested, method1.password), "aanvraag.xlsx")
    assert method1.run().state == "success"
    [delivered] = [e.id for e in method1.exchanges()]
    pairs = expected_pairs(method1.world, set(requested), EXCHANGE_DATE)
    person = next(child for child, *_ in pairs)
    person_rows = [p for p in pairs if person in (p[0], p[1])]

    # A second exchange of the same person, built but not delivered yet (its run still going).
    pending = make_exchange(method1.protocol_id, state="built", tag="pending", on=EXCHANGE_DATE + dt.timedelta(days=3))
    staging = Staging(method1.protocol_id, pending)
    staging.write_encrypted("valid", "\n".join(requested).encode())
    with session_scope() as session:
        rows = matching.match(session, requested, supplements=["sociale_toeslag"], reference_date=dt.date(2020, 3, 1),
                              exchange_date=EXCHANGE_DATE)
        protocol = session.get(Protocol, method1.protocol_id)
        actor = audit.Actor(type="system", name="test")
        audit.record(session, "request.validated", actor=actor, protocol=protocol, exchange_id=pending, subjects=requested)
        audit.record(session, "entitlements.matched", actor=actor, protocol=protocol, exchange_id=pending,
                     subjects={r.child_insz for r in rows} | {r.beneficiary_insz for r in rows})
        session.get(Exchange, pending).result_sha256 = "0" * 64
    staging.write_encrypted("matched", matching.serialise(rows))
    staging.path("result.xlsx").write_bytes(b"encrypted result with the person in it")

    capsys.readouterr()
    code = main(["subject-erase", "--insz-file", str(_insz_file(tmp_path, person)), "--reason", "art. 17 request, case 2026/15"])
    out = capsys.readouterr().out
    assert code == 0

    assert person not in staging.read_encrypted("valid").decode().split()
    left = matching.deserialise(staging.read_encrypted("matched"))
    assert len(left) == len(rows) - len(person_rows) and all(person not in (r.child_insz, r.beneficiary_insz) for r in left)
    assert not staging.path("result.xlsx").exists()
    with session_scope() as session:
        rebuilt = session.get(Exchange, pending)
        assert rebuilt.state == "matched" and rebuilt.result_sha256 is None  # build_result rebuilds it
    assert f"exchange {pending}" in out and "clear `build_result`" in out

    assert "What cannot be erased, and why:" in out
    assert "audit trail keeps a keyed-HMAC reference" in out and "3653 days" in out
    assert f"exchange {delivered} to Testgemeente" in out and "audit export" in out
    assert "request file as the municipality sent it" in out
    assert "entitlement store is a copy of the Groeipakket" in out

    [request] = records("subject.erasure_request")
    assert request.subjects_count == 1 and "case 2026/15" in request.message
    [notice] = records("subject.erasure_notice")
    assert notice.protocol_id == method1.protocol_id and str(delivered) in notice.message
    assert [r.exchange_id for r in records("subject.erased_from_staging")] == [pending]
    assert verify()

    # Asked again: nothing is left in staging; the answer still says what stays.
    assert main(["subject-erase", "--insz-file", str(_insz_file(tmp_path, person)), "--reason", "repeat"]) == 0
    again = capsys.readouterr().out
    assert "Nothing of theirs was left to erase in staging." in again and "What cannot be erased" in again


def test_insz_file_errors_name_the_line_never_the_content(sqlite_db, tmp_path, capsys):
    valid = insz.make(dt.date(2014, 2, 3), 55)
    bad = valid[:9] + f"{(int(valid[9:]) + 1) % 100:02d}"
    assert main(["subject-access", "--insz-file", str(_insz_file(tmp_path, valid, bad))]) == 2
    err = capsys.readouterr().err
    assert "line(s) 2" in err and bad not in err and valid not in err
    assert main(["subject-access", "--insz-file", str(tmp_path / "missing.txt")]) == 2
    assert main(["subject-erase", "--insz-file", str(_insz_file(tmp_path, valid)), "--reason", f"about {valid}"]) == 2
    assert "may not contain an INSZ" in capsys.readouterr().err
