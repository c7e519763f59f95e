"""Correctable protocols: `return` to draft, `amend` while draft (audited by field name), `list` header."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Protocol, ProtocolTransition
from welfare_exchange.errors import IllegalTransition, InputError
from welfare_exchange.protocols import amend, create, transition

USER = audit.Actor(type="user", name="tester")
#: Values that must never reach the audit trail or the protocol's history.
SECRET_REF = "CB/2026/AMEND-981"
SECRET_ADDRESS = "dpo.amend@gemeente.example"


def _draft(session, **overrides):
    fields = dict(nis_code="44021", municipality="Gent", kind="method1", channel="sftp", key_connection="key_44021",
                  actor=USER)
    fields.update(overrides)
    return create(session, **fields)


def _walk(session, protocol_id, path):
    for action in path:
        transition(session, protocol_id, action, actor=USER, reason="test", on=dt.date(2026, 11, 28))


def _audit_texts(session) -> str:
    rows = session.execute(sa.select(AuditRecord.action, AuditRecord.message, AuditRecord.counts)).all()
    transitions = session.scalars(sa.select(ProtocolTransition.reason)).all()
    return json.dumps([list(map(str, r)) for r in rows] + [str(t) for t in transitions])


@pytest.mark.parametrize("path", [("submit",), ("submit", "advise")])
def test_return_from_submitted_or_advised_goes_back_to_draft_audited(project_db, path):
    with session_scope() as session:
        protocol = _draft(session)
        _walk(session, protocol.id, path)
        transition(session, protocol.id, "return", actor=USER, reason="college decision reference missing")
        assert protocol.status == "draft"
        record = session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "protocol.return")).one()
        assert record.actor == "tester" and "-> draft" in record.message and "reference missing" in record.message
        assert audit.verify(session).ok


@pytest.mark.parametrize("path", [(), ("submit", "advise", "sign"), ("submit", "advise", "sign", "suspend"),
                                  ("revoke",), ("submit", "advise", "sign", "expire")])
def test_return_is_refused_from_other_statuses(project_db, path):
    with session_scope() as session:
        protocol = _draft(session, college_decision_ref="CB/1", college_decision_date=dt.date(2026, 9, 1),
                          dpo_advice_date=dt.date(2026, 9, 2))
        _walk(session, protocol.id, path)
        with pytest.raises(IllegalTransition, match=r"cannot return protocol \d+: it is \w+, .*submitted or advised"):
            transition(session, protocol.id, "return", actor=USER, reason="x")


def test_return_needs_a_reason(project_db):
    with session_scope() as session:
        protocol = _draft(session)
        _walk(session, protocol.id, ("submit",))
        with pytest.raises(InputError, match="needs a reason"):
            transition(session, protocol.id, "return", actor=USER)


def test_amend_a_draft_changes_the_fields_and_audits_only_their_names(project_db):
    with session_scope() as session:
        protocol = _draft(session, channel="smime", sender_address="old@gemeente.example")
        changed = amend(session, protocol.id, {
            "college_decision_ref": SECRET_REF, "college_decision_date": dt.date(2026, 9, 1),
            "dpo_advice_date": dt.date(2026, 9, 15), "sender_address": SECRET_ADDRESS.upper(),
            "municipality": "Gent",  # unchanged: not reported
        }, actor=USER)
        assert changed == ["college_decision_ref", "college_decision_date", "dpo_advice_date", "sender_address"]
        assert protocol.college_decision_ref == SECRET_REF and protocol.sender_address == SECRET_ADDRESS
        record = session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "protocol.amend")).one()
        assert record.actor == "tester" and record.protocol_id == protocol.id and record.outcome == "success"
        for name in changed:
            assert name in record.message
        history = session.scalars(sa.select(ProtocolTransition).where(ProtocolTransition.reason.like("amended%"))).one()
        assert (history.from_status, history.to_status) == ("draft", "draft")
        texts = _audit_texts(session)
        leaked = [v for v in (SECRET_REF, SECRET_ADDRESS, "2026-09-15", "old@gemeente") if v in texts]
        assert not leaked, "a value reached the audit trail or the history"
        # The same values again change nothing and record nothing.
        assert amend(session, protocol.id, {"college_decision_ref": SECRET_REF}, actor=USER) == []
        assert session.scalar(sa.select(sa.func.count()).where(AuditRecord.action == "protocol.amend")) == 1
        assert audit.verify(session).ok


@pytest.mark.parametrize("path", [("submit",), ("submit", "advise"), ("submit", "advise", "sign"),
                                  ("submit", "advise", "sign", "suspend"), ("revoke",)])
def test_amend_is_refused_past_draft_with_what_to_do(project_db, path):
    with session_scope() as session:
        protocol = _draft(session, college_decision_ref="CB/1", college_decision_date=dt.date(2026, 9, 1),
                          dpo_advice_date=dt.date(2026, 9, 2))
        _walk(session, protocol.id, path)
        status = protocol.status
        with pytest.raises(IllegalTransition, match=f"cannot amend protocol {protocol.id}: it is {status}") as refused:
            amend(session, protocol.id, {"college_decision_ref": "CB/2"}, actor=USER)
        hint = "protocol return" if status in ("submitted", "advised") else "new protocol"
        assert hint in str(refused.value)
        assert protocol.college_decision_ref == "CB/1"


def test_amend_checks_the_protocol_as_create_does(project_db):
    with session_scope() as session:
        protocol = _draft(session, valid_from=dt.date(2026, 12, 1))
        with pytest.raises(InputError, match="legal maximum"):
            amend(session, protocol.id, {"result_retention_days": 10_000}, actor=USER)
        with pytest.raises(InputError, match="valid-until lies before valid-from"):
            amend(session, protocol.id, {"valid_until": dt.date(2026, 11, 1)}, actor=USER)
        with pytest.raises(InputError, match="unknown result field"):
            amend(session, protocol.id, {"allowed_fields": ["child_insz", "child_name"]}, actor=USER)
        with pytest.raises(InputError, match="cannot be amended"):
            amend(session, protocol.id, {"nis_code": "11002"}, actor=USER)
        with pytest.raises(InputError, match="unknown protocol field"):
            amend(session, protocol.id, {"status": "signed"}, actor=USER)
        assert protocol.status == "draft" and protocol.result_retention_days == 90
        assert session.scalar(sa.select(sa.func.count()).where(AuditRecord.action == "protocol.amend")) == 0


# --------------------------------------------------------------------------- the CLI


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "welfare_exchange.cli", *args], capture_output=True, text=True,
                          timeout=60)


def _ok(*args) -> str:
    done = _cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _snapshot() -> dict:
    with open(os.environ["WELFARE_EXCHANGE_REGISTRY_SNAPSHOT"]) as handle:
        return {p["id"]: p for p in json.load(handle)["protocols"]}


def test_cli_story_a_protocol_without_references_is_returned_amended_and_signed(project_db):
    """Created without college decision and DPO advice, it reached `advised` and could never be signed."""
    pid = _ok("protocol", "create", "--nis", "44021", "--municipality", "Gent", "--kind", "method1",
              "--channel", "sftp", "--key-connection", "key_44021").strip()
    _ok("protocol", "submit", pid)
    _ok("protocol", "advise", pid)
    refused = _cli("protocol", "sign", pid)
    assert refused.returncode == 2 and "missing college decision reference" in refused.stderr

    no_amend = _cli("protocol", "amend", pid, "--college-decision-ref", SECRET_REF)
    assert no_amend.returncode == 2 and no_amend.stderr.count("\n") == 1
    assert f"cannot amend protocol {pid}: it is advised" in no_amend.stderr and "protocol return" in no_amend.stderr
    no_reason = _cli("protocol", "return", pid)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr

    assert _ok("protocol", "return", pid, "--reason", "college decision and DPO advice missing").strip() == \
        f"protocol {pid}: draft"
    assert _snapshot()[int(pid)]["status"] == "draft"
    out = _ok("protocol", "amend", pid, "--college-decision-ref", SECRET_REF, "--college-decision-date", "2026-09-01",
              "--dpo-advice-date", "2026-09-15", "--valid-until", "2027-12-31", "--schedule", "@daily")
    assert out.strip() == (f"protocol {pid}: amended (valid_until, college_decision_ref, college_decision_date, "
                           "dpo_advice_date, schedule)")
    assert _snapshot()[int(pid)]["valid_until"] == "2027-12-31", "amend rewrites the registry snapshot"
    assert _snapshot()[int(pid)]["schedule"] == "@daily"
    assert "unchanged" in _ok("protocol", "amend", pid, "--schedule", "@daily")
    assert _ok("protocol", "amend", pid, "--schedule", "").strip() == f"protocol {pid}: amended (schedule)"
    assert _snapshot()[int(pid)]["schedule"] is None

    _ok("protocol", "submit", pid)
    _ok("protocol", "advise", pid)
    assert _ok("protocol", "sign", pid).strip() == f"protocol {pid}: signed"
    assert _snapshot()[int(pid)]["status"] == "signed"

    with session_scope() as session:
        protocol = session.get(Protocol, int(pid))
        assert protocol.college_decision_ref == SECRET_REF and protocol.dpo_advice_date == dt.date(2026, 9, 15)
        facts = session.execute(
            sa.select(AuditRecord.action, AuditRecord.outcome).where(AuditRecord.protocol_id == int(pid))
            .order_by(AuditRecord.id)
        ).all()
        assert [tuple(f) for f in facts] == [
            ("protocol.created", "success"), ("protocol.submit", "success"), ("protocol.advise", "success"),
            ("protocol.sign", "refused"), ("protocol.amend", "refused"), ("protocol.return", "success"),
            ("protocol.amend", "success"), ("protocol.amend", "success"), ("protocol.submit", "success"),
            ("protocol.advise", "success"), ("protocol.sign", "success"),
        ]
        leaked = SECRET_REF in _audit_texts(session)
        assert not leaked, "the college decision's reference reached the audit trail"
        assert audit.verify(session).ok
    shown = json.loads(_ok("protocol", "show", pid, "--json"))
    assert [(h["from"], h["to"]) for h in shown["history"]] == [
        (None, "draft"), ("draft", "submitted"), ("submitted", "advised"), ("advised", "draft"), ("draft", "draft"),
        ("draft", "draft"), ("draft", "submitted"), ("submitted", "advised"), ("advised", "signed"),
    ]


def test_cli_amend_without_fields_or_with_bad_values_is_refused(project_db):
    pid = _ok("protocol", "create", "--nis", "44021", "--municipality", "Gent", "--kind", "method1",
              "--channel", "sftp", "--key-connection", "key_44021").strip()
    nothing = _cli("protocol", "amend", pid)
    assert nothing.returncode == 2 and "nothing to amend" in nothing.stderr
    bad = _cli("protocol", "amend", pid, "--result-retention-days", "100000")
    assert bad.returncode == 2 and "legal maximum" in bad.stderr
    cleared = _cli("protocol", "amend", pid, "--municipality", " ")
    assert cleared.returncode == 2 and "municipality must not be empty" in cleared.stderr
    missing = _cli("protocol", "amend", "999", "--schedule", "@daily")
    assert missing.returncode == 2 and "no protocol with id 999" in missing.stderr


def test_cli_list_prints_a_header(project_db):
    assert _ok("protocol", "list").splitlines() == [
        "   id  nis    municipality                 kind       channel status    valid"
    ]
    _ok("protocol", "create", "--nis", "44021", "--municipality", "Gent", "--kind", "method1", "--channel", "sftp",
        "--key-connection", "key_44021")
    header, row = _ok("protocol", "list").splitlines()
    assert header.split() == ["id", "nis", "municipality", "kind", "channel", "status", "valid"]
    assert row.split()[:6] == ["1", "44021", "Gent", "method1", "sftp", "draft"]
    assert json.loads(_ok("protocol", "list", "--json"))[0]["status"] == "draft"
