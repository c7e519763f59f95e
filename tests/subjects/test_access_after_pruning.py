"""An access request after the audit trail was pruned says what can no longer be reported.

Once records past the legal term are pruned, their subject references are gone with them: a
person in an exchange from before the pruning is no longer found. The answer must say that
exchanges before the oldest record still held can no longer be reported — never a bare "no
exchange", which would be false. (The legal term is shrunk to a day so the test need not wait.)
"""

from __future__ import annotations

import datetime as dt
import json

from tests.retention.helpers import ACTOR, exchange, signed_protocol
from welfare_exchange import audit, insz
from welfare_exchange.cli import main
from welfare_exchange.db import session_scope
from welfare_exchange.retention import runner


def _exchange_about(protocol_id: int, numbers: list[str], tag: str) -> int:
    exchange_id = exchange(protocol_id, tag=tag)
    with session_scope() as session:
        audit.record(session, "request.subjects", actor=ACTOR, protocol_id=protocol_id, exchange_id=exchange_id,
                     data_categories=["INSZ kind"], subjects=numbers)
    return exchange_id


def _access(capsys, tmp_path, *numbers: str, json_out: bool = False):
    path = tmp_path / "persons.txt"
    path.write_text("".join(f"{n}\n" for n in numbers))
    capsys.readouterr()
    assert main(["subject-access", "--insz-file", str(path), *(["--json"] if json_out else [])]) == 0
    out = capsys.readouterr().out
    return json.loads(out)["persons"] if json_out else out


def test_access_after_pruning_says_earlier_exchanges_can_no_longer_be_reported(project_db, anchoring, monkeypatch, tmp_path, capsys):
    old_person, new_person = (insz.make(dt.date(2012, 3, 4), n) for n in (11, 12))
    protocol_id = signed_protocol()
    _exchange_about(protocol_id, [old_person], "before")

    # Never pruned: the plain answer holds.
    persons = _access(capsys, tmp_path, old_person, new_person, json_out=True)
    assert [len(p["exchanges"]) for p in persons] == [1, 0] and persons[1]["reportable_from"] is None
    assert "no exchange in this system included this person's data" in _access(capsys, tmp_path, new_person)

    # The legal term passes: the first exchange's records are pruned (and anchored).
    monkeypatch.setenv("WELFARE_EXCHANGE_AUDIT_RETENTION_DAYS", "0")
    runner.anchor_audit(actor=ACTOR)
    later = _exchange_about(protocol_id, [new_person], "after")
    assert runner.prune_audit(dt.date.today() + dt.timedelta(days=1), actor=ACTOR)["records_pruned"] > 0
    runner.anchor_audit(actor=ACTOR)
    assert main(["audit", "verify"]) == 0

    text = _access(capsys, tmp_path, old_person, new_person)
    first, second = text.split("Person on line 2")
    assert "no exchange in this system included" not in text
    assert "no exchange from " in first and "can no longer be reported: the audit trail was pruned after its legal term" in first
    assert f"exchange {later} " in second and "can no longer be reported" in second
    persons = _access(capsys, tmp_path, old_person, new_person, json_out=True)
    assert [len(p["exchanges"]) for p in persons] == [0, 1]
    assert persons[0]["reportable_from"] and persons[0]["reportable_from"] == persons[1]["reportable_from"]
