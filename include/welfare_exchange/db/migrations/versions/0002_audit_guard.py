"""The database refuses UPDATE and DELETE on audit rows.

A trigger on both audit tables aborts any UPDATE or DELETE, except a DELETE of records covered by
a row in ``audit_prune_permit`` — which only the pruning transaction of
:func:`welfare_exchange.audit.prune` writes and removes again. On PostgreSQL TRUNCATE is refused
too. An attacker with DDL rights can drop the triggers; the hash chain still shows what they
changed (``welfare-exchange audit verify``).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_PERMIT = {
    "audit_record": "EXISTS (SELECT 1 FROM audit_prune_permit p WHERE p.through_id >= OLD.id)",
    "audit_subject": "EXISTS (SELECT 1 FROM audit_prune_permit p WHERE p.through_id >= OLD.audit_id)",
}


GENESIS = "0" * 64


def upgrade() -> None:
    # The chain's head row exists from the start, so appenders only ever lock and update it.
    op.execute(f"INSERT INTO audit_head (id, last_id, last_hash) VALUES (1, 0, '{GENESIS}')")
    if op.get_bind().dialect.name == "postgresql":
        # One function per table: PL/pgSQL does not short-circuit, so a shared function could
        # not name OLD.id for one table and OLD.audit_id for the other.
        for table, permit in _PERMIT.items():
            op.execute(
                f"""
                CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger AS $$
                BEGIN
                    IF TG_OP = 'DELETE' THEN
                        IF {permit} THEN
                            RETURN OLD;
                        END IF;
                    END IF;
                    RAISE EXCEPTION 'audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
                END
                $$ LANGUAGE plpgsql
                """
            )
        op.execute(
            """
            CREATE OR REPLACE FUNCTION audit_no_truncate() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'audit trail is append-only: TRUNCATE on % refused', TG_TABLE_NAME;
            END
            $$ LANGUAGE plpgsql
            """
        )
        for table in _PERMIT:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION audit_no_truncate()"
            )
    else:
        for table, permit in _PERMIT.items():
            op.execute(
                f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'audit trail is append-only: UPDATE on {table} refused'); END"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} WHEN NOT {permit} "
                f"BEGIN SELECT RAISE(ABORT, 'audit trail is append-only: DELETE on {table} refused'); END"
            )


def downgrade() -> None:
    op.execute("DELETE FROM audit_head")
    if op.get_bind().dialect.name == "postgresql":
        for table in ("audit_record", "audit_subject"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")
        op.execute("DROP FUNCTION IF EXISTS audit_no_truncate()")
    else:
        for table in _PERMIT:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
