"""Exchanges remember the furthest state they reached (``exchange.progress``).

A ``failed`` exchange (its protocol closed before delivery) must, when a re-run succeeds,
resume where it had got to — never lower (:mod:`welfare_exchange.exchange_state`). The new
column keeps that furthest forward state. Existing rows: a forward state is its own progress;
a failed exchange with a built result had reached ``built``; for the others it is unknown and
stays empty (read as ``received``, which is what a recovery did before).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_FORWARD = ("received", "validated", "matched", "built", "delivered")


def upgrade() -> None:
    with op.batch_alter_table("exchange") as batch:
        batch.add_column(sa.Column("progress", sa.String(20), nullable=True))
    exchange = sa.table("exchange", sa.column("state"), sa.column("progress"), sa.column("result_sha256"))
    op.execute(exchange.update().where(exchange.c.state.in_(_FORWARD)).values(progress=exchange.c.state))
    op.execute(
        exchange.update()
        .where(exchange.c.state == "failed", exchange.c.result_sha256.is_not(None))
        .values(progress="built")
    )


def downgrade() -> None:
    # Not a batch copy on SQLite: rows of other tables refer to exchange, so it cannot be dropped
    # and rebuilt with foreign keys on; SQLite (>= 3.35) drops the column in place.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE exchange DROP COLUMN progress")
    else:
        op.drop_column("exchange", "progress")
