"""Subject references stored as 32 bytes, keyed by the reference: one B-tree instead of three.

An exchange writes up to ~200,000 references (its requested children), then ~90,000 more (the
matched children and their beneficiaries). Stored as 64-character hex text with a composite
primary key *and* an index on the reference, SQLite maintained three B-trees per row (the rowid
table, the key and the index). Now the table is the key: ``(subject_ref, audit_id)``, the raw
32-byte HMAC, ``WITHOUT ROWID`` on SQLite — inserting an exchange's references costs about half,
a subject-access lookup is a prefix seek, and ``audit verify`` reads the table once in key order
(see :func:`welfare_exchange.audit.trail.verify`).

The references are the same keyed HMAC-SHA256 values as before, only binary, so existing rows
are converted losslessly and the digests already in the chain still verify. The append-only
guard of 0002 is put back on the new table.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BATCH = 50_000
_PERMIT = "EXISTS (SELECT 1 FROM audit_prune_permit p WHERE p.through_id >= OLD.audit_id)"


def _copy(select_sql: str, insert_sql: str, convert) -> None:
    bind = op.get_bind()
    result = bind.execute(sa.text(select_sql))
    while batch := result.fetchmany(_BATCH):
        bind.execute(sa.text(insert_sql), [convert(audit_id, ref) for audit_id, ref in batch])


def _guard(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        # The function audit_subject_append_only() of 0002 checks OLD.audit_id: reused as is.
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION audit_subject_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_no_truncate()"
        )
    else:
        op.execute(
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'audit trail is append-only: UPDATE on {table} refused'); END"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} WHEN NOT {_PERMIT} "
            f"BEGIN SELECT RAISE(ABORT, 'audit trail is append-only: DELETE on {table} refused'); END"
        )


def upgrade() -> None:
    op.create_table(
        "audit_subject_new",
        sa.Column("subject_ref", sa.LargeBinary(32), nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["audit_id"], ["audit_record.id"], name="fk_audit_subject_ref_audit_id"),
        sa.PrimaryKeyConstraint("subject_ref", "audit_id", name="pk_audit_subject_ref"),
        sqlite_with_rowid=False,
    )
    _copy(
        "SELECT audit_id, subject_ref FROM audit_subject",
        "INSERT INTO audit_subject_new (subject_ref, audit_id) VALUES (:ref, :audit_id)",
        lambda audit_id, ref: {"ref": bytes.fromhex(ref), "audit_id": audit_id},
    )
    op.drop_table("audit_subject")  # its triggers go with it
    op.rename_table("audit_subject_new", "audit_subject")
    _guard("audit_subject")


def downgrade() -> None:
    op.create_table(
        "audit_subject_old",
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("subject_ref", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["audit_id"], ["audit_record.id"]),
        sa.PrimaryKeyConstraint("audit_id", "subject_ref"),
    )
    _copy(
        "SELECT audit_id, subject_ref FROM audit_subject",
        "INSERT INTO audit_subject_old (audit_id, subject_ref) VALUES (:audit_id, :ref)",
        lambda audit_id, ref: {"ref": bytes(ref).hex(), "audit_id": audit_id},
    )
    op.drop_table("audit_subject")
    op.rename_table("audit_subject_old", "audit_subject")
    op.create_index("ix_audit_subject_subject_ref", "audit_subject", ["subject_ref"], unique=False)
    _guard("audit_subject")
