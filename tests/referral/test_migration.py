"""Migration 0011 keeps existing protocols, adds the referral tables, and survives a round trip."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from tests.referral.builders import TODAY, USER, candidate_csv, family, referral_protocol
from welfare_exchange.db import get_engine, session_scope
from welfare_exchange.db.engine import alembic_config, dispose_engines, upgrade
from welfare_exchange.referral import candidates

REFERRAL_TABLES = {"referral_candidate", "referral", "referral_feedback"}


def _tables(url) -> set[str]:
    return set(sa.inspect(get_engine(url)).get_table_names())


def test_upgrade_keeps_protocols_and_round_trips(project_db):
    command.downgrade(alembic_config(project_db), "0011-1")
    dispose_engines()
    assert not REFERRAL_TABLES & _tables(project_db)
    with get_engine(project_db).begin() as conn:  # a Method 1 protocol as the schema before 0011 held it
        conn.execute(sa.text(
            "INSERT INTO protocol (nis_code, municipality, kind, legal_basis, purpose, channel, channel_connection, "
            "key_connection, allowed_fields, reference_date, supplements, age_min, age_max, request_retention_days, "
            "result_retention_days, delete_request_after_match, require_signature, status, status_changed_at, created_at) "
            "VALUES ('44021', 'Gent', 'method1', 'basis', 'doel', 'sftp', 'sftp_44021', 'key', '[\"child_insz\"]', "
            "'2020-03-01', '[\"sociale_toeslag\"]', 0, 25, 30, 90, false, false, 'signed', '2026-11-01', '2026-11-01')"
        ))
        # Rows referencing the protocol: a migration that copies and drops the table would fail on them.
        conn.execute(sa.text(
            "INSERT INTO protocol_transition (protocol_id, to_status, at, actor) "
            "SELECT id, 'draft', '2026-11-01', 'tester' FROM protocol"
        ))
    dispose_engines()
    upgrade(project_db)
    dispose_engines()
    assert REFERRAL_TABLES <= _tables(project_db)
    with get_engine(project_db).connect() as conn:
        kept = conn.execute(sa.text("SELECT kind, status, consent_required, agreement_ref FROM protocol")).one()
    assert tuple(kept) == ("method1", "signed", False, None)
    with session_scope() as session:
        referral_protocol(session)
        candidates.import_candidates(session, candidate_csv([family()]), today=TODAY, actor=USER)

    command.downgrade(alembic_config(project_db), "0011-1")
    dispose_engines()
    assert not REFERRAL_TABLES & _tables(project_db)
    upgrade(project_db)
    dispose_engines()
    with session_scope() as session:
        assert session.execute(sa.text("SELECT count(*) FROM protocol")).scalar() == 2
