"""Protocol lifecycle, the gate, the registry snapshot and the `protocol` CLI."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
import sqlalchemy as sa

from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, ProtocolTransition
from welfare_exchange.errors import IllegalTransition, InputError, ProtocolError
from welfare_exchange.protocols import check_gate, create, transition, write_snapshot

USER = audit.Actor(type="user", name="tester")
TODAY = dt.date(2026, 11, 28)


def _create(session, **overrides):
    fields = dict(
        nis_code="44021", municipality="Gent", kind="method1", channel="sftp", key_connection="key_44021",
        college_decision_ref="CB/2026/17", college_decision_date=dt.date(2026, 10, 1),
        dpo_advice_date=dt.date(2026, 10, 10), actor=USER,
    )
    fields.update(overrides)
    return create(session, **fields)


def _sign(session, protocol_id, on=TODAY):
    for action in ("submit", "advise", "sign"):
        transition(session, protocol_id, action, actor=USER, on=on)


def test_full_lifecycle_is_timestamped_and_audited(project_db):
    with session_scope() as session:
        protocol = _create(session)
        _sign(session, protocol.id)
        transition(session, protocol.id, "suspend", actor=USER, reason="investigation")
        transition(session, protocol.id, "resume", actor=USER)
        transition(session, protocol.id, "revoke", actor=USER, reason="college decision withdrawn")
        assert protocol.status == "revoked"
        assert protocol.signature_date == TODAY and protocol.valid_from == TODAY
        steps = session.scalars(sa.select(ProtocolTransition.to_status).order_by(ProtocolTransition.id)).all()
        assert steps == ["draft", "submitted", "advised", "signed", "suspended", "signed", "revoked"]
        actions = session.scalars(sa.select(AuditRecord.action).order_by(AuditRecord.id)).all()
        assert actions == ["protocol.created", "protocol.submit", "protocol.advise", "protocol.sign",
                           "protocol.suspend", "protocol.resume", "protocol.revoke"]
        assert audit.verify(session).ok


@pytest.mark.parametrize(
    "path, action",
    [((), "sign"), ((), "advise"), (("submit",), "sign"), (("submit", "advise", "sign", "revoke"), "resume"),
     (("submit", "advise", "sign", "revoke"), "sign"), (("submit", "advise", "sign", "expire"), "suspend")],
)
def test_illegal_transitions_are_refused(sqlite_db, path, action):
    with session_scope() as session:
        protocol = _create(session)
        for step in path:
            transition(session, protocol.id, step, actor=USER, on=TODAY)
        with pytest.raises(IllegalTransition, match=f"cannot {action} protocol {protocol.id}"):
            transition(session, protocol.id, action, actor=USER)


def test_signing_needs_the_college_decision_and_dpo_advice(sqlite_db):
    with session_scope() as session:
        protocol = _create(session, dpo_advice_date=None)
        transition(session, protocol.id, "submit", actor=USER)
        transition(session, protocol.id, "advise", actor=USER)
        with pytest.raises(ProtocolError, match="DPO advice date"):
            transition(session, protocol.id, "sign", actor=USER)


def test_bad_protocol_fields_are_refused(sqlite_db):
    with session_scope() as session:
        with pytest.raises(InputError, match="NIS code"):
            _create(session, nis_code="4402")
        with pytest.raises(InputError, match="unknown result field"):
            _create(session, allowed_fields=["child_insz", "child_name"])
        with pytest.raises(InputError, match="legal maximum"):
            _create(session, result_retention_days=10_000)


def test_gate(sqlite_db):
    with session_scope() as session:
        protocol = _create(session, valid_until=dt.date(2027, 6, 30))
        assert check_gate(protocol, TODAY).state == "wait"
        _sign(session, protocol.id, on=dt.date(2026, 12, 1))
        assert check_gate(protocol, TODAY).state == "wait"  # valid only from its signature
        assert check_gate(protocol, dt.date(2026, 12, 1)).is_open
        assert check_gate(protocol, dt.date(2027, 7, 1)).state == "closed"
        assert check_gate(protocol, dt.date(2026, 12, 2), channel="smime").state == "closed"
        assert check_gate(protocol, dt.date(2026, 12, 2), fields=["supplement"]).state == "closed"
        transition(session, protocol.id, "suspend", actor=USER)
        decision = check_gate(protocol, dt.date(2026, 12, 2))
        assert decision.state == "closed" and "suspended" in decision.reason


def test_snapshot_holds_no_secrets(sqlite_db, tmp_path):
    with session_scope() as session:
        _create(session)
        path = write_snapshot(session, tmp_path / "snap.json")
    data = json.loads(open(path).read())
    assert data["protocols"][0]["nis_code"] == "44021"
    assert "password" not in json.dumps(data).lower()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "welfare_exchange.cli", *args], capture_output=True, text=True)


def test_cli_create_prints_only_the_id_and_refuses_bad_input(sqlite_db):
    made = _cli("protocol", "create", "--nis", "44021", "--municipality", "Gent", "--kind", "method1",
                "--channel", "sftp", "--key-connection", "key_44021")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().isdigit()
    bad = _cli("protocol", "sign", made.stdout.strip())
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "cannot sign protocol" in bad.stderr
    missing = _cli("protocol", "show", "999")
    assert missing.returncode == 2 and "no protocol with id 999" in missing.stderr
    with session_scope() as session:  # the refusal is a fact in the audit trail too
        assert session.scalar(sa.select(AuditRecord.outcome).where(AuditRecord.action == "protocol.sign")) == "refused"
    shown = _cli("protocol", "show", made.stdout.strip(), "--json")
    assert json.loads(shown.stdout)["status"] == "draft"
