"""The entitlement store: its tables, the import file's format and row rules, bulk replacement.

Two ways data gets into the store, both built for millions of rows:

* :func:`replace_store` empties the three tables and reloads them in **one transaction**, with
  raw DBAPI calls — ``executemany`` on SQLite, ``COPY FROM STDIN`` on PostgreSQL — after
  dropping the secondary indexes (rebuilt once at the end, which is much faster than keeping
  them up to date row by row). Readers see the old store or the new one, never half of it.
  The synthetic generator uses it.
* :func:`welfare_exchange.entitlements.importer.import_csv` streams the agency's extract into
  the bitemporal store (full or delta); the file format and the checks of one row are here.

No function here logs, prints or puts in an exception message an INSZ number.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import io
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange import insz as insz_lib
from welfare_exchange.db.engine import get_engine
from welfare_exchange.db.models import Child
from welfare_exchange.errors import InputError

log = logging.getLogger(__name__)


#: The store's tables in the order they must be emptied (entitlement refers to the other two).
TABLES = ("entitlement", "beneficiary", "child")

CHILD_COLUMNS = ("id", "insz", "birth_date", "nis_code")
BENEFICIARY_COLUMNS = ("id", "insz", "email", "address_line", "postcode", "city")
ENTITLEMENT_COLUMNS = (
    "id", "child_id", "beneficiary_id", "supplement", "start_date", "end_date", "recorded_from", "recorded_to",
)

#: The import file's header: these columns, in this order ...
REQUIRED_COLUMNS = (
    "child_insz",
    "child_birth_date",
    "child_nis",
    "beneficiary_insz",
    "supplement",
    "start_date",
    "end_date",
)
#: ... optionally followed by any of these, in any order.
OPTIONAL_COLUMNS = ("beneficiary_email", "beneficiary_address_line", "beneficiary_postcode", "beneficiary_city")
_CONTACT_LIMITS = {"beneficiary_email": 250, "beneficiary_address_line": 250, "beneficiary_postcode": 10, "beneficiary_city": 120}

#: How many bad rows a refusal names (the count covers all of them).
MAX_REPORTED = 20
#: Rows per IN (...) lookup: well under SQLite's variable limit, large enough to be fast.
_LOOKUP_CHUNK = 5000
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: SQLite page cache during a bulk load, in KiB (see :func:`replace_store`).
SQLITE_LOAD_CACHE_KIB = 32768


# --------------------------------------------------------------------------- bulk replacement


@dataclass
class Chunk:
    """Rows for the three tables, as tuples in the column order above, ids assigned by the caller.

    Dates are ISO strings (``YYYY-MM-DD``) — SQLite's storage format for SQLAlchemy ``Date``
    and a literal PostgreSQL parses — recorded moments are UTC as ``YYYY-MM-DD HH:MM:SS.ffffff``
    (:data:`MOMENT_FORMAT`, SQLite's storage format for ``DateTime``; the PostgreSQL load reads
    them in UTC), and ``None`` is NULL. A chunk must be self-contained:
    every child and beneficiary an entitlement refers to is in the same or an earlier chunk.
    """

    children: list[tuple] = field(default_factory=list)
    beneficiaries: list[tuple] = field(default_factory=list)
    entitlements: list[tuple] = field(default_factory=list)


#: How a recorded moment (UTC) is written in a :class:`Chunk`.
MOMENT_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class BulkLoader:
    """Writes chunks into the emptied store through the raw DBAPI connection of ``conn``.

    Made by :func:`replace_store`, which owns the transaction; use :meth:`write` only.
    """

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        self.cursor = conn.connection.dbapi_connection.cursor()
        self._indexes: list[tuple[str, str]] = []
        self._constraints: list[tuple[str, str, str]] = []

    # The statements are built from the constant column tuples above, never from input.
    def _empty(self) -> None:
        if self.dialect == "postgresql":
            self.cursor.execute("SET LOCAL TIME ZONE 'UTC'")  # the chunks' recorded moments are UTC
            self.cursor.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
        else:
            for table in TABLES:
                self.cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - constant table names

    def drop_secondary_indexes(self, tables: Sequence[str] = TABLES) -> None:
        """Drop what makes row-by-row loading slow, remembering how to rebuild it (:meth:`rebuild_indexes`).

        On both databases: the non-constraint indexes of the tables (default the three). On PostgreSQL also
        the unique and foreign-key constraints (an index built by one sort at the end is far
        faster than millions of random inserts into it, and a foreign key re-added afterwards
        is validated by one join instead of one query per copied row); the primary keys stay.
        SQLite cannot drop constraints without rebuilding the table; its foreign keys are
        switched off for the load instead (see :func:`replace_store`).

        The definitions are read back from the database itself, so whatever the migrations
        created is recreated exactly (same names, same columns).
        """
        names = tuple(tables)
        if self.dialect == "postgresql":
            # Foreign keys first (dropped first, re-added last: they may rely on the others).
            self.cursor.execute(
                "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
                "WHERE c.contype IN ('f', 'u') AND c.conrelid::regclass::text IN %s "
                "ORDER BY c.contype = 'u', 1, 2",
                (names,),
            )
            self._constraints = self.cursor.fetchall()
            for table, name, _definition in self._constraints:
                self.cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            self.cursor.execute(
                "SELECT i.indexname, i.indexdef FROM pg_indexes i "
                "WHERE i.schemaname = current_schema() AND i.tablename IN %s "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
                (names,),
            )
        else:
            # Indexes with SQL text are explicit CREATE INDEX ones; constraint autoindexes have none.
            self.cursor.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                f"AND tbl_name IN ({', '.join('?' * len(names))})",
                names,
            )
        self._indexes = sorted(self.cursor.fetchall())
        for name, _sql in self._indexes:
            self.cursor.execute(f'DROP INDEX "{name}"')

    def write(self, chunk: Chunk) -> None:
        """Append one chunk (children and beneficiaries before the entitlements that use them)."""
        for table, columns, rows in (
            ("child", CHILD_COLUMNS, chunk.children),
            ("beneficiary", BENEFICIARY_COLUMNS, chunk.beneficiaries),
            ("entitlement", ENTITLEMENT_COLUMNS, chunk.entitlements),
        ):
            if not rows:
                continue
            if self.dialect == "postgresql":
                self.cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", _copy_buffer(rows))
            else:
                placeholders = ", ".join("?" * len(columns))
                self.cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", rows)

    def rebuild_indexes(self) -> None:
        """Recreate what :meth:`drop_secondary_indexes` dropped, each index by one sort."""
        for _name, sql in self._indexes:
            self.cursor.execute(sql)
        for table, name, definition in reversed(self._constraints):
            self.cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        self._indexes, self._constraints = [], []

    def _finish(self) -> None:
        self.rebuild_indexes()
        if self.dialect == "postgresql":
            # Ids were given explicitly: move the sequences past them for later inserts (import).
            for table in TABLES:
                self.cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
                )
        # Fresh statistics, so the planner picks the indexes for set joins of 100k+ numbers.
        for table in TABLES:
            self.cursor.execute(f"ANALYZE {table}")


def _copy_buffer(rows: Iterable[Sequence[Any]]) -> io.StringIO:
    r"""Rows in COPY's text format: tab-separated, ``\N`` for NULL.

    Safe without escaping because the generator's values never contain a tab, newline or
    backslash (digits, ISO dates, NIS codes, made-up addresses and e-mail addresses).
    """
    return io.StringIO(
        "".join("\t".join("\\N" if v is None else str(v) for v in row) + "\n" for row in rows)
    )


@contextlib.contextmanager
def replace_store(url: str | None = None) -> Iterator[tuple[BulkLoader, Session]]:
    """Empty the entitlement store and yield a loader to refill it, all in one transaction.

    Yields ``(loader, session)``: write chunks with ``loader.write``; use ``session`` for
    anything that must commit atomically with the new store (the audit fact). On leaving the
    block the secondary indexes are rebuilt and the transaction commits; on an exception
    everything is rolled back and the previous store is untouched.
    """
    engine = get_engine(url)
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # pysqlite starts transactions only before DML, so DROP/CREATE INDEX would run
            # outside ours: take manual control and issue BEGIN IMMEDIATE ourselves. Foreign
            # keys are switched off for the load (it is a no-op inside a transaction, hence
            # first): the generator assigns consistent ids, and SQLite then empties the
            # tables with its fast truncate instead of checking every row.
            conn.commit()
            saved_isolation = dbapi.isolation_level
            dbapi.isolation_level = None
            cursor = dbapi.cursor()
            cursor.execute("PRAGMA foreign_keys=OFF")
            # The unique INSZ indexes fill in random order; a larger page cache keeps more of
            # them in memory. Measured for 2 M children: 2 MiB (default) 65 s / 150 MB peak,
            # 32 MiB 43 s / 215 MB, 128 MiB 41-56 s / 370 MB.
            saved_cache = cursor.execute("PRAGMA cache_size").fetchone()[0]
            cursor.execute(f"PRAGMA cache_size=-{SQLITE_LOAD_CACHE_KIB}")
        try:
            with conn.begin():
                if sqlite:
                    dbapi.cursor().execute("BEGIN IMMEDIATE")
                loader = BulkLoader(conn)
                loader._empty()
                loader.drop_secondary_indexes()
                session = Session(bind=conn)
                yield loader, session
                loader._finish()
                session.flush()
                session.close()
        finally:
            if sqlite:
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute(f"PRAGMA cache_size={int(saved_cache)}")
                dbapi.isolation_level = saved_isolation
                with contextlib.suppress(Exception):
                    # The load went through the WAL; give its disk space back.
                    cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                cursor.close()


# --------------------------------------------------------------------------- helpers for tests and DAGs


def sample_children(session: Session, nis_code: str, n: int, seed: int) -> list[str]:
    """INSZ numbers of ``n`` children domiciled in ``nis_code``, chosen deterministically by ``seed``.

    For building synthetic request files. The numbers are returned to the caller in memory —
    they are personal data (even synthetic ones look real): never log or print them.
    Fewer than ``n`` come back when the municipality has fewer children.
    """
    import random

    numbers = session.scalars(sa.select(Child.insz).where(Child.nis_code == nis_code).order_by(Child.id)).all()
    return random.Random(seed).sample(list(numbers), min(n, len(numbers)))


# --------------------------------------------------------------------------- CSV import


def _parse_date(text: str) -> dt.date | None:
    if not _ISO_DATE.fullmatch(text):
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def _insz_problem(column: str, raw: str, birth: dt.date | None = None) -> tuple[str | None, str | None]:
    """``(normalised number, None)`` or ``(None, reason)`` — the reason never quotes the value.

    With ``birth`` (a child's row) the number must also carry that birth date, when it
    carries one at all (BIS numbers may have an unknown date).
    """
    number = raw if len(raw) == 11 and raw.isdigit() else insz_lib.normalise(raw)  # the common case needs no cleaning
    if not number:
        return None, f"{column} is empty"
    if not number.isdigit():
        return None, f"{column} contains characters other than digits"
    if len(number) == 10:
        return None, f"{column} has 10 digits, not 11 (a spreadsheet may have dropped a leading 0)"
    if len(number) != 11:
        return None, f"{column} does not have 11 digits"
    if _surely_valid(number, birth):
        return number, None
    if not insz_lib.is_valid(number):
        return None, f"{column} is not a valid INSZ (check digits or date part wrong)"
    if birth is not None:
        born = insz_lib.birth_date(number)
        if born is not None and born != birth:
            return None, "child_birth_date does not match the birth date in child_insz"
    return number, None


@functools.lru_cache(maxsize=1)
def _this_year() -> int:
    """The year now, looked up once per process: a stale year only sends new-year births to stdnum."""
    return dt.date.today().year


def _surely_valid(number: str, birth: dt.date | None) -> bool:
    """A fast path for the common case, not the rule: True only for numbers that python-stdnum
    (through :mod:`welfare_exchange.insz`) certainly accepts, and that carry ``birth`` if given.

    Validating with stdnum costs tens of microseconds per number, and a large import has
    hundreds of thousands. A number with a real calendar date (month + 0, 20 or 40) and check
    digits right under its century's rule is valid for stdnum too; so is its birth date
    (2,000,000,000 is not a multiple of 97, so only one century rule can fit). Everything else —
    unknown dates, invalid numbers — goes to stdnum, which decides and gives the reason.
    """
    yy, mm, dd = int(number[:2]), int(number[2:4]), int(number[4:6])
    if not (1 <= mm <= 12 or 21 <= mm <= 32 or 41 <= mm <= 52):
        return False
    month = mm % 20
    if birth is not None:
        if (yy, month, dd) != (birth.year % 100, birth.month, birth.day):
            return False
        centuries = [birth.year // 100 * 100]
    else:
        centuries = [1900, 2000]
    for century in centuries:
        year = century + yy
        # stdnum only tries the 2000 rule for years not in the future.
        if century not in (1900, 2000) or (century == 2000 and year > _this_year()):
            continue
        try:
            dt.date(year, month, dd)
        except ValueError:
            continue
        if insz_lib.check_digits(number[:9], century == 2000) == number[9:]:
            return True
    return False


def _read_header(reader: Iterator[list[str]]) -> list[str]:
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputError("the import file is empty: expected a header line " + ",".join(REQUIRED_COLUMNS)) from None
    required, extra = header[: len(REQUIRED_COLUMNS)], header[len(REQUIRED_COLUMNS) :]
    unknown = [h for h in extra if h not in OPTIONAL_COLUMNS]
    if tuple(required) != REQUIRED_COLUMNS or unknown or len(set(extra)) != len(extra):
        raise InputError(
            "the import file's header (line 1) must be exactly "
            + ",".join(REQUIRED_COLUMNS)
            + ", optionally followed by any of "
            + ",".join(OPTIONAL_COLUMNS)
        )
    return header
