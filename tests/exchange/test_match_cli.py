"""`welfare-exchange match`: the dry run builds exactly what the DAG would, and delivers nothing."""

from __future__ import annotations

import datetime as dt
import io
import json
import secrets
import subprocess
import sys

import msoffcrypto
import python_calamine
import sqlalchemy as sa

from tests.exchange.builders import encrypted_request, expected_pairs
from tests.exchange.builders import build_world
from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange
from welfare_exchange.protocols import create, transition

AS_OF = dt.date(2026, 11, 2)


def _protocol(nis: str) -> int:
    user = audit.Actor.current_user()
    with session_scope() as session:
        protocol = create(
            session, nis_code=nis, municipality="Dryrun", kind="method1", channel="sftp", key_connection=f"key_{nis}",
            college_decision_ref="CB/1", college_decision_date=dt.date(2026, 9, 1), dpo_advice_date=dt.date(2026, 9, 2),
            actor=user,
        )
        for action in ("submit", "advise", "sign"):
            transition(session, protocol.id, action, actor=user, on=dt.date(2026, 10, 1))
        return protocol.id


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "welfare_exchange.cli", *args], capture_output=True, text=True)


def test_dry_run_writes_the_encrypted_result_and_opens_no_exchange(sqlite_db, tmp_path, monkeypatch):
    password = secrets.token_urlsafe(12)
    monkeypatch.setenv("AIRFLOW_CONN_KEY_98001", json.dumps({"conn_type": "generic", "password": password}))
    protocol_id = _protocol("98001")
    world = build_world("98001", children=200, seed=5)
    numbers = [n for n, _ in world.children[:80]]
    request = tmp_path / "aanvraag.xlsx"
    request.write_bytes(encrypted_request(numbers, password))
    secret = tmp_path / "password.txt"
    secret.write_text(password + "\n")
    out = tmp_path / "resultaat.xlsx"

    done = _cli("match", str(request), "--password-file", str(secret), "--protocol", str(protocol_id),
                "--out", str(out), "--as-of", AS_OF.isoformat())

    assert done.returncode == 0, done.stderr
    assert "matched rows" in done.stdout
    office = msoffcrypto.OfficeFile(io.BytesIO(out.read_bytes()))
    office.load_key(password=password, verify_password=True)
    plain = io.BytesIO()
    office.decrypt(plain)
    rows = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(plain.getvalue())).get_sheet_by_name("Resultaat").to_python()
    got = [(r[0], r[1], r[2], r[3] or None) for r in rows[1:]]
    assert got == expected_pairs(world, set(numbers), AS_OF)
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Exchange)) == 0
        assert session.scalar(sa.select(AuditRecord.action).order_by(AuditRecord.id.desc()).limit(1)) == "exchange.dry_run"


def test_dry_run_refuses_a_closed_gate_and_a_wrong_password(sqlite_db, tmp_path):
    protocol_id = _protocol("98002")
    request = tmp_path / "aanvraag.xlsx"
    request.write_bytes(encrypted_request([], "right-password"))
    secret = tmp_path / "password.txt"
    secret.write_text("wrong-password")
    wrong = _cli("match", str(request), "--password-file", str(secret), "--protocol", str(protocol_id),
                 "--out", str(tmp_path / "r.xlsx"), "--as-of", AS_OF.isoformat())
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "password" in wrong.stderr
    with session_scope() as session:
        transition(session, protocol_id, "revoke", actor=audit.Actor.current_user())
    closed = _cli("match", str(request), "--password-file", str(secret), "--protocol", str(protocol_id),
                  "--out", str(tmp_path / "r.xlsx"))
    assert closed.returncode == 2 and "revoked" in closed.stderr
    assert not (tmp_path / "r.xlsx").exists()
