"""Anchoring the audit trail outside the database: authenticated, recorded, failing loudly.

The attacks themselves are in ``test_tamper_matrix.py``; here the anchoring's own behaviour: a
TSA that does not answer fails the task and writes nothing, a signature-only set-up, what the
settings require, a legitimate pruning that verify accepts, and an anchoring that stopped
between its two writes.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from tests.audit.test_trail import ACTOR, _fill
from welfare_exchange.audit import anchors, authentication, integrity
from welfare_exchange.cli import main
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord
from welfare_exchange.retention import runner


def _check() -> integrity.IntegrityReport:
    with session_scope() as session:
        return integrity.check(session)


def _facts(action: str) -> list[AuditRecord]:
    with session_scope() as session:
        return list(session.scalars(sa.select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.id)))


def test_an_unreachable_tsa_fails_the_anchoring_and_writes_nothing(project_db, anchoring, monkeypatch):
    _fill(3)
    monkeypatch.setenv("WELFARE_EXCHANGE_AUDIT_TSA_URL", "http://127.0.0.1:9/tsa")  # discard port: nobody answers
    with pytest.raises(authentication.AnchorAuthError, match="did not answer"):
        runner.anchor_audit(actor=ACTOR)
    assert not anchors.anchor_file().exists() or anchors.anchor_file().read_text() == ""
    assert _facts("audit.anchored") == []


def test_a_tsa_answering_for_another_trust_root_is_refused(project_db, anchoring, monkeypatch, tmp_path):
    from welfare_exchange.devtools.pki import TestCertificateAuthority

    _fill(2)
    stranger = TestCertificateAuthority.create(tmp_path / "other-ca")
    monkeypatch.setenv("WELFARE_EXCHANGE_AUDIT_TSA_CERT", str(stranger.certificate_path))
    with pytest.raises(authentication.AnchorAuthError, match="gave no valid time-stamp"):
        anchors.anchor_head(actor=ACTOR)
    assert _facts("audit.anchored") == []


def test_signature_only_is_the_checkout_default(project_db, monkeypatch, capsys):
    """No TSA configured: anchors are signed; a line without a signature is refused."""
    for name in ("WELFARE_EXCHANGE_AUDIT_TSA_URL", "WELFARE_EXCHANGE_AUDIT_TSA_CERT", "WELFARE_EXCHANGE_AUDIT_ANCHOR_AUTH"):
        monkeypatch.delenv(name, raising=False)
    _fill(2)
    out = anchors.anchor_head(actor=ACTOR)
    assert out["methods"] == ["signature"]
    line = json.loads(anchors.anchor_file().read_text())
    assert "sig" in line and "tsr" not in line
    assert main(["audit", "verify"]) == 0
    assert "signatures: 1 verified" in capsys.readouterr().out

    # With the public key only (as an auditor's machine has it), verify still checks it.
    public = authentication.public_key().public_bytes_raw().hex()
    monkeypatch.delenv("WELFARE_EXCHANGE_AUDIT_SIGNING_KEY")
    monkeypatch.setenv("WELFARE_EXCHANGE_AUDIT_SIGNING_PUBLIC_KEY", public)
    assert _check().ok
    # Another key's signature does not pass.
    monkeypatch.setenv("WELFARE_EXCHANGE_AUDIT_SIGNING_PUBLIC_KEY", "11" * 32)
    report = _check()
    assert not report.ok and "anchor 1 (line 1) is not authentic: its signature does not check out" in report.reason


def test_a_required_time_stamp_without_a_trusted_tsa_certificate_fails_verify(project_db, anchoring, monkeypatch):
    _fill(2)
    anchors.anchor_head(actor=ACTOR)
    monkeypatch.delenv("WELFARE_EXCHANGE_AUDIT_TSA_CERT")
    report = _check()
    assert not report.ok and "time-stamps cannot be checked: WELFARE_EXCHANGE_AUDIT_TSA_CERT is not set" in report.reason


def test_a_signature_only_anchor_fails_when_time_stamps_are_required(project_db, anchoring, monkeypatch):
    _fill(2)
    monkeypatch.setenv("WELFARE_EXCHANGE_AUDIT_ANCHOR_AUTH", "signature")
    monkeypatch.delenv("WELFARE_EXCHANGE_AUDIT_TSA_URL")
    anchors.anchor_head(actor=ACTOR)
    monkeypatch.setenv("WELFARE_EXCHANGE_AUDIT_ANCHOR_AUTH", "timestamp,signature")
    report = _check()
    assert not report.ok and "anchor 1 (line 1) carries no RFC 3161 time-stamp" in report.reason


def test_the_daily_run_prunes_only_what_an_anchor_that_old_vouches_for(project_db, anchoring, monkeypatch, capsys):
    """A legitimate pruning: vouched for by an anchor older than the term, covered by the next."""
    monkeypatch.setenv("WELFARE_EXCHANGE_AUDIT_RETENTION_DAYS", "0")  # the legal term, shrunk to today
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    _fill(4)
    first = runner.run(tomorrow, actor=ACTOR, prune=True)
    assert first["audit"]["records_pruned"] == 0 and first["audit"]["waiting_for"]  # no anchor yet
    assert first["anchor"]["sequence"] == 1
    _fill(2)
    second = runner.run(tomorrow, actor=ACTOR)
    through = first["anchor"]["last_id"]
    assert second["audit"]["records_pruned"] == through  # exactly what anchor 1 covered
    assert second["anchor"]["sequence"] == 2
    [pruned] = _facts("audit.pruned")
    assert pruned.counts == {"records": through, "from_id": 1, "through_id": through, "anchor_sequence": 1}
    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert f"pruning: records before {through + 1} pruned" in out and "prunings: 1 vouched for" in out
    assert "1 naming pruned records" in out


def test_an_anchoring_stopped_between_its_two_writes_is_recorded_late(project_db, anchoring, monkeypatch):
    _fill(2)
    real = anchors._record_anchoring

    def crash(*args, **kwargs):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(anchors, "_record_anchoring", crash)
    with pytest.raises(RuntimeError):
        anchors.anchor_head(actor=ACTOR)
    assert len(anchors.read_store(anchors.anchor_file())) == 1 and _facts("audit.anchored") == []
    assert _check().ok  # only the latest anchor's fact may be missing
    monkeypatch.setattr(anchors, "_record_anchoring", real)
    assert anchors.anchor_head(actor=ACTOR)["sequence"] == 2
    facts = _facts("audit.anchored")
    assert [f.counts["sequence"] for f in facts] == [1, 2] and "recorded late" in facts[0].message
    assert _check().ok


def test_verify_takes_the_anchor_store_from_the_command_line(project_db, anchoring, tmp_path, capsys):
    _fill(2)
    elsewhere = tmp_path / "worm" / "anchors.jsonl"
    assert main(["audit", "anchor", "--anchors", str(elsewhere)]) == 0
    assert "anchor 1: record 2, authenticated by timestamp and signature" in capsys.readouterr().out
    assert main(["audit", "verify", "--anchors", str(elsewhere)]) == 0
    assert main(["audit", "verify"]) == 1  # the default store has none of it
    assert "is missing, but the trail records 1 anchoring(s)" in capsys.readouterr().out
