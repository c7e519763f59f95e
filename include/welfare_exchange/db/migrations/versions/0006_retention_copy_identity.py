"""Retention items carry the identity of the copy they delete: size, IMAP hint, missing since.

A copy is found again by its content digest (``sha256``, recorded at receipt) whatever folder it
was moved to; ``size`` narrows the search, ``uidvalidity``/``uid`` (the server's COPYUID answer
to a move) say where to look first. ``missing_since`` is the run date on which a copy was first
not found (reported, never certified).

Items recorded before this revision get the digest their exchange already knows where it is the
copy's own: the request file's SHA-256 for a quarantined request file, the validation report's
from the ledger, and the raw message's from the ``request.fetched`` audit fact for a request
message (its ``sha256`` held the attachment's digest, which no message matches).

Revision ID: 0006
Revises: 0004
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("retention_item") as batch:
        batch.add_column(sa.Column("size", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("uidvalidity", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("uid", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("missing_since", sa.Date(), nullable=True))
    _backfill_digests()


def _backfill_digests() -> None:
    bind = op.get_bind()
    pending = "deleted_at IS NULL AND exchange_id IS NOT NULL"
    bind.execute(sa.text(
        "UPDATE retention_item SET sha256 = (SELECT e.request_sha256 FROM exchange e WHERE e.id = retention_item.exchange_id) "
        f"WHERE {pending} AND sha256 IS NULL AND \"where\" = 'sftp' AND kind = 'quarantine'"
    ))
    bind.execute(sa.text(
        "UPDATE retention_item SET sha256 = (SELECT s.sha256 FROM side_effect s "
        "WHERE s.idempotency_key = :prefix || CAST(retention_item.exchange_id AS VARCHAR(20)) || :suffix) "
        f"WHERE {pending} AND sha256 IS NULL AND \"where\" = 'sftp' AND kind = 'report'"
    ), {"prefix": "exchange:", "suffix": ":report"})
    messages = bind.execute(sa.text(
        f"SELECT id, exchange_id FROM retention_item WHERE {pending} AND \"where\" = 'imap'"
    )).all()
    for item_id, exchange_id in messages:
        hashes = bind.execute(sa.text(
            "SELECT file_hashes FROM audit_record WHERE action = 'request.fetched' AND exchange_id = :e ORDER BY id LIMIT 1"
        ), {"e": exchange_id}).scalar()
        if isinstance(hashes, str):
            hashes = json.loads(hashes)
        digest = (hashes or {}).get("message")
        bind.execute(sa.text("UPDATE retention_item SET sha256 = :d WHERE id = :i"), {"d": digest, "i": item_id})


def downgrade() -> None:
    with op.batch_alter_table("retention_item") as batch:
        batch.drop_column("missing_since")
        batch.drop_column("uid")
        batch.drop_column("uidvalidity")
        batch.drop_column("size")
