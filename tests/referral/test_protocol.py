"""The referral protocol kind: the cooperation agreement, consent required, allowed fields, same gate."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest

from tests.referral.builders import SIGNED, USER, referral_protocol
from welfare_exchange.db import session_scope
from welfare_exchange.errors import InputError, ProtocolError
from welfare_exchange.protocols import REFERRAL_FIELDS, amend, check_gate, create, transition
from welfare_exchange.referral.selection import require_gate


def test_a_referral_protocol_carries_its_agreement_and_defaults(project_db):
    with session_scope() as session:
        protocol = referral_protocol(session, sign=False)
        assert protocol.kind == "referral" and protocol.consent_required is True
        assert protocol.allowed_fields == list(REFERRAL_FIELDS)
        assert protocol.schedule == "@weekly"
        assert protocol.agreement_ref == "SO/2026/3" and protocol.agreement_date == dt.date(2026, 9, 15)
        assert "toestemming" in protocol.legal_basis and "kansarmoede" in protocol.purpose


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"agreement_ref": None}, "cooperation agreement's reference"),
        ({"agreement_date": None}, "date it was concluded"),
        ({"secrecy_conditions": "  "}, "professional-secrecy conditions"),
        ({"consent_required": False}, "always requires the family's consent"),
        ({"allowed_fields": ["parent_name", "child_insz"]}, "unknown referral field"),
        ({"allowed_fields": ["parent_name", "score_notes"]}, "unknown referral field"),
        ({"allowed_fields": []}, "at least one field"),
        ({"valid_until": dt.date(2026, 9, 1)}, "agreement's date lies after"),
    ],
)
def test_bad_referral_protocols_are_refused(sqlite_db, overrides, message):
    with session_scope() as session, pytest.raises(InputError, match=message):
        referral_protocol(session, sign=False, **overrides)


def test_other_kinds_take_no_agreement_and_no_referral_fields(sqlite_db):
    common = dict(nis_code="44021", municipality="Gent", channel="sftp", key_connection="k", actor=USER)
    with session_scope() as session:
        with pytest.raises(InputError, match="only a referral protocol"):
            create(session, kind="method1", agreement_ref="SO/1", **common)
        with pytest.raises(InputError, match="unknown result field"):
            create(session, kind="method1", allowed_fields=["parent_name"], **common)
        assert create(session, kind="method1", **common).consent_required is False


def test_consent_cannot_be_amended_away(sqlite_db):
    with session_scope() as session:
        protocol = referral_protocol(session, sign=False)
        with pytest.raises(InputError, match="always requires"):
            amend(session, protocol.id, {"consent_required": False}, actor=USER)
        assert amend(session, protocol.id, {"allowed_fields": ["parent_name", "parent_phone"]}, actor=USER) == ["allowed_fields"]


def test_same_lifecycle_and_gate(project_db):
    with session_scope() as session:
        protocol = referral_protocol(session, sign=False, valid_until=dt.date(2027, 6, 30))
        assert check_gate(protocol, SIGNED, kind="referral").state == "wait"
        with pytest.raises(ProtocolError, match="gate wait"):
            require_gate(protocol, SIGNED)
        for action in ("submit", "advise", "sign"):
            transition(session, protocol.id, action, actor=USER, on=SIGNED)
        require_gate(protocol, SIGNED)
        assert check_gate(protocol, SIGNED, kind="method1").state == "closed"
        with pytest.raises(ProtocolError, match="expired"):
            require_gate(protocol, dt.date(2027, 7, 1))
        transition(session, protocol.id, "suspend", actor=USER)
        with pytest.raises(ProtocolError, match="suspended"):
            require_gate(protocol, SIGNED)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "welfare_exchange.cli", *args], capture_output=True, text=True)


def test_cli_creates_a_referral_protocol_and_refuses_one_without_consent(sqlite_db):
    base = ["protocol", "create", "--nis", "44021", "--kind", "referral", "--channel", "sftp",
            "--key-connection", "key_44021", "--agreement-ref", "SO/2026/3", "--agreement-date", "2026-09-15",
            "--secrecy-conditions", "art. 7"]
    refused = _cli(*base, "--no-consent-required")
    assert refused.returncode == 2 and "always requires the family's consent" in refused.stderr
    made = _cli(*base, "--fields", "parent_name,parent_phone,criteria")
    assert made.returncode == 0, made.stderr
    shown = json.loads(_cli("protocol", "show", made.stdout.strip(), "--json").stdout)
    assert shown["kind"] == "referral" and shown["consent_required"] is True
    assert shown["allowed_fields"] == ["parent_name", "parent_phone", "criteria"]
    assert shown["agreement_ref"] == "SO/2026/3" and shown["secrecy_conditions"] == "art. 7"
