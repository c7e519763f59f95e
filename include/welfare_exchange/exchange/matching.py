"""Match requested children against the entitlement store, as one set join in the database.

The request's INSZ numbers are bulk-loaded into a temporary table (COPY on PostgreSQL, one
``INSERT … SELECT FROM json_each`` on SQLite) and joined on the indexed ``child.insz`` and
``entitlement(child_id, supplement, start_date)``: never row by row, never by loading the store
into memory.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import uuid
from collections.abc import Sequence
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session


class MatchRow(NamedTuple):
    """One (child, beneficiary) pair with a supplement overlapping [reference date, exchange date].

    ``period_start`` is clipped to the reference date (nothing from before it is disclosed);
    ``period_end`` is ``None`` when the entitlement was still running on the exchange date.
    A named tuple, not a dataclass: a result has up to ~200,000 of them, made in the match and
    again when the build step reads the staged rows, and a tuple is made three times faster.
    """

    child_insz: str
    beneficiary_insz: str
    supplement: str
    period_start: dt.date
    period_end: dt.date | None


def _as_date(value) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _load_numbers(session: Session, table: str, numbers: Sequence[str]) -> None:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text(f"CREATE TEMP TABLE {table} (insz CHAR(11) PRIMARY KEY) ON COMMIT DROP"))
        buffer = io.StringIO("\n".join(numbers) + ("\n" if numbers else ""))
        raw = connection.connection.dbapi_connection
        with raw.cursor() as cursor:
            cursor.copy_expert(f"COPY {table} (insz) FROM STDIN", buffer)
        connection.execute(sa.text(f"ANALYZE {table}"))
    else:
        connection.execute(sa.text(f"CREATE TEMP TABLE {table} (insz TEXT PRIMARY KEY) WITHOUT ROWID"))
        # One statement: SQLite unpacks the JSON array itself (4x faster than executemany),
        # and sorted numbers fill the B-tree in order.
        connection.exec_driver_sql(
            f"INSERT OR IGNORE INTO {table} (insz) SELECT value FROM json_each(?)", (json.dumps(sorted(numbers)),)
        )


def match(
    session: Session,
    numbers: Sequence[str],
    *,
    supplements: Sequence[str],
    reference_date: dt.date,
    exchange_date: dt.date,
) -> list[MatchRow]:
    """Every (child, beneficiary, supplement) among ``numbers`` entitled between the two dates.

    One row per pair, its period the union of the pair's overlapping entitlement periods;
    sorted by child, beneficiary, supplement — the same input always gives the same rows.

    :param numbers: distinct, validated INSZ numbers of the requested children.
    :param supplements: e.g. ``["sociale_toeslag"]`` (from the protocol).
    :param reference_date: the protocol's reference date (default 2020-03-01).
    :param exchange_date: the run's logical date.
    """
    table = f"wx_request_{uuid.uuid4().hex[:10]}"
    _load_numbers(session, table, numbers)
    # SQLite's planner prefers to scan every sociale-toeslag entitlement and probe the request
    # (3 s on a 2M-child store); CROSS JOIN makes it drive from the request through the indexes
    # instead (0.9 s for 180,000 numbers, and milliseconds for a small request). PostgreSQL
    # plans this itself from the ANALYZEd temporary table.
    drive = "CROSS JOIN" if session.connection().dialect.name == "sqlite" else "JOIN"
    supplement_params = {f"s{i}": s for i, s in enumerate(supplements)}
    in_list = ", ".join(f":s{i}" for i in range(len(supplements))) or "NULL"
    query = sa.text(
        f"""
        SELECT c.insz AS child_insz, b.insz AS beneficiary_insz, e.supplement AS supplement,
               MIN(e.start_date) AS first_start,
               CASE WHEN COUNT(*) > COUNT(e.end_date) THEN NULL ELSE MAX(e.end_date) END AS last_end
        FROM {table} r
        {drive} child c ON c.insz = r.insz
        {drive} entitlement e ON e.child_id = c.id
        JOIN beneficiary b ON b.id = e.beneficiary_id
        WHERE e.supplement IN ({in_list})
          AND e.start_date <= :exchange_date
          AND (e.end_date IS NULL OR e.end_date >= :reference_date)
        GROUP BY c.insz, b.insz, e.supplement
        ORDER BY c.insz, b.insz, e.supplement
        """
    )
    params = {"exchange_date": exchange_date, "reference_date": reference_date, **supplement_params}
    if session.connection().dialect.name == "sqlite":  # SQLite stores dates as ISO text
        params = {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in params.items()}
    as_date = functools.lru_cache(maxsize=None)(_as_date)  # SQLite gives ISO text: a few thousand distinct days
    rows = []
    for child, beneficiary, supplement, first_start, last_end in session.execute(query, params).all():
        start, end = as_date(first_start), as_date(last_end)
        # (child, beneficiary, supplement, period start, period end)
        rows.append(
            MatchRow(
                child, beneficiary, supplement, max(start, reference_date),
                end if end is not None and end < exchange_date else None,
            )
        )
    if session.connection().dialect.name == "sqlite":
        session.connection().execute(sa.text(f"DROP TABLE {table}"))
    return rows


def serialise(rows: Sequence[MatchRow]) -> bytes:
    """Compact text form of match rows, for the (encrypted) staging file."""
    return "\n".join(
        f"{r.child_insz},{r.beneficiary_insz},{r.supplement},{r.period_start.isoformat()},"
        f"{r.period_end.isoformat() if r.period_end else ''}"
        for r in rows
    ).encode("ascii")


def deserialise(data: bytes) -> list[MatchRow]:
    date = functools.lru_cache(maxsize=None)(dt.date.fromisoformat)  # a few thousand distinct days
    rows = []
    for line in data.decode("ascii").splitlines():
        child, beneficiary, supplement, start, end = line.split(",")
        rows.append(MatchRow(child, beneficiary, supplement, date(start), date(end) if end else None))
    return rows


def people(data: bytes) -> list[tuple[str, str]]:
    """Only the (child, beneficiary) numbers of serialised match rows (no dates parsed)."""
    return [tuple(line.split(",", 2)[:2]) for line in data.decode("ascii").splitlines()]
