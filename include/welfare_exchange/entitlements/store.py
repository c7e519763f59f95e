"""The entitlement store: bulk replacement (for the data generator) and the CSV import.

Two ways data gets into the store, both built for millions of rows:

* :func:`replace_store` empties the three tables and reloads them in **one transaction**, with
  raw DBAPI calls — ``executemany`` on SQLite, ``COPY FROM STDIN`` on PostgreSQL — after
  dropping the secondary indexes (rebuilt once at the end, which is much faster than keeping
  them up to date row by row). Readers see the old store or the new one, never half of it.
* :func:`import_csv` validates a whole CSV file first (any bad row refuses the import, reported
  by line number and reason, never by value) and then upserts it idempotently with
  ``INSERT … ON CONFLICT`` in bulk.

No function here logs, prints or puts in an exception message an INSZ number.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import logging
import pathlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange import audit
from welfare_exchange import insz as insz_lib
from welfare_exchange.db.engine import get_engine, session_scope
from welfare_exchange.db.models import Beneficiary, Child, Entitlement
from welfare_exchange.entitlements import municipalities
from welfare_exchange.errors import InputError

log = logging.getLogger(__name__)

#: The supplements of the Groeipakket that the store holds.
SUPPLEMENTS = ("sociale_toeslag", "zorgtoeslag", "schooltoeslag")

#: The store's tables in the order they must be emptied (entitlement refers to the other two).
TABLES = ("entitlement", "beneficiary", "child")

CHILD_COLUMNS = ("id", "insz", "birth_date", "nis_code")
BENEFICIARY_COLUMNS = ("id", "insz", "email", "address_line", "postcode", "city")
ENTITLEMENT_COLUMNS = ("id", "child_id", "beneficiary_id", "supplement", "start_date", "end_date")

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
    and a literal PostgreSQL parses — and ``None`` is NULL. A chunk must be self-contained:
    every child and beneficiary an entitlement refers to is in the same or an earlier chunk.
    """

    children: list[tuple] = field(default_factory=list)
    beneficiaries: list[tuple] = field(default_factory=list)
    entitlements: list[tuple] = field(default_factory=list)


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
            self.cursor.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
        else:
            for table in TABLES:
                self.cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - constant table names

    def _drop_secondary_indexes(self) -> None:
        """Drop what makes row-by-row loading slow, remembering how to rebuild it.

        On both databases: the non-constraint indexes of the three tables. On PostgreSQL also
        the unique and foreign-key constraints (an index built by one sort at the end is far
        faster than millions of random inserts into it, and a foreign key re-added afterwards
        is validated by one join instead of one query per copied row); the primary keys stay.
        SQLite cannot drop constraints without rebuilding the table; its foreign keys are
        switched off for the load instead (see :func:`replace_store`).

        The definitions are read back from the database itself, so whatever the migrations
        created is recreated exactly (same names, same columns).
        """
        names = tuple(TABLES)
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

    def _finish(self) -> None:
        for _name, sql in self._indexes:
            self.cursor.execute(sql)
        for table, name, definition in reversed(self._constraints):
            self.cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
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
                loader._drop_secondary_indexes()
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


@dataclass
class _Parsed:
    """The validated content of an import file, keyed for the upsert."""

    rows: int = 0
    sha256: str = ""
    # child INSZ -> (birth date, NIS code, line)
    children: dict[str, tuple[dt.date, str, int]] = field(default_factory=dict)
    # beneficiary INSZ -> ({contact column: value} of the columns present, line)
    beneficiaries: dict[str, tuple[dict[str, str | None], int]] = field(default_factory=dict)
    # (child INSZ, beneficiary INSZ, supplement, start) -> (end or None, line)
    entitlements: dict[tuple[str, str, str, dt.date], tuple[dt.date | None, int]] = field(default_factory=dict)
    problems: list[tuple[int, str]] = field(default_factory=list)


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
    number = insz_lib.normalise(raw)
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
        if century not in (1900, 2000) or (century == 2000 and year > dt.date.today().year):
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


def _validate(path: pathlib.Path) -> _Parsed:
    """Read and check the whole file; collect every problem with its line number."""
    parsed = _Parsed()
    digest = hashlib.sha256()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"import file not found: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read the import file {path}: {exc.strerror}") from None
    digest.update(raw)
    parsed.sha256 = digest.hexdigest()
    try:
        text = raw.decode("utf-8-sig")  # Excel writes a BOM
    except UnicodeDecodeError:
        raise InputError("the import file is not UTF-8 text; save it as CSV UTF-8") from None

    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = _read_header(reader)
        contact_columns = header[len(REQUIRED_COLUMNS) :]
        for record in reader:
            line = reader.line_num
            if not record or record == [""]:
                continue  # a blank line (often the last one)
            parsed.rows += 1
            problem = _check_record(parsed, record, line, len(header), contact_columns)
            if problem:
                parsed.problems.append((line, problem))
    except csv.Error:
        # csv's message can quote the offending text: report only where it happened.
        parsed.problems.append((reader.line_num, "is not valid CSV (unbalanced quotes?)"))
    return parsed


def _check_record(parsed: _Parsed, record: list[str], line: int, width: int, contact_columns: list[str]) -> str | None:
    """Validate one row and add it to ``parsed``; the first problem found, or ``None``."""
    if len(record) != width:
        return f"has {len(record)} fields, the header has {width}"
    values = [v.strip() for v in record]
    child_raw, birth_raw, nis, ben_raw, supplement, start_raw, end_raw = values[: len(REQUIRED_COLUMNS)]

    birth = _parse_date(birth_raw)
    child, problem = _insz_problem("child_insz", child_raw, birth)
    if problem:
        return problem
    if birth is None:
        return "child_birth_date is not an ISO date (YYYY-MM-DD)"
    if not municipalities.is_known(nis):
        return "child_nis is not the NIS code of a Flemish municipality"
    beneficiary, problem = _insz_problem("beneficiary_insz", ben_raw)
    if problem:
        return problem
    if supplement not in SUPPLEMENTS:
        return "supplement must be one of " + ", ".join(SUPPLEMENTS)
    start = _parse_date(start_raw)
    if start is None:
        return "start_date is not an ISO date (YYYY-MM-DD)"
    end = None
    if end_raw:
        end = _parse_date(end_raw)
        if end is None:
            return "end_date is not an ISO date (YYYY-MM-DD) nor empty (ongoing)"
        if end < start:
            return "end_date is before start_date"
    contact: dict[str, str | None] = {}
    for column, value in zip(contact_columns, values[len(REQUIRED_COLUMNS) :]):
        if len(value) > _CONTACT_LIMITS[column]:
            return f"{column} is longer than {_CONTACT_LIMITS[column]} characters"
        if column == "beneficiary_email" and value and "@" not in value:
            return "beneficiary_email is not an e-mail address"
        contact[column] = value or None

    # Rows must agree with each other about the same child, beneficiary and period.
    known = parsed.children.get(child)
    if known is None:
        parsed.children[child] = (birth, nis, line)
    elif known[:2] != (birth, nis):
        return f"child_birth_date or child_nis differs from line {known[2]} for the same child"
    known_ben = parsed.beneficiaries.get(beneficiary)
    if known_ben is None:
        parsed.beneficiaries[beneficiary] = (contact, line)
    elif contact_columns and known_ben[0] != contact:
        return f"beneficiary contact details differ from line {known_ben[1]} for the same beneficiary"
    key = (child, beneficiary, supplement, start)
    known_period = parsed.entitlements.get(key)
    if known_period is None:
        parsed.entitlements[key] = (end, line)
    elif known_period[0] != end:
        return (
            f"end_date conflicts with line {known_period[1]} "
            "(same child, beneficiary, supplement and start_date)"
        )
    return None


def _refusal_message(path: pathlib.Path, parsed: _Parsed) -> str:
    shown = "; ".join(f"line {line}: {reason}" for line, reason in parsed.problems[:MAX_REPORTED])
    more = len(parsed.problems) - MAX_REPORTED
    tail = f"; and {more} more bad rows" if more > 0 else ""
    return (
        f"import of {path.name} refused, nothing was imported: {len(parsed.problems)} bad "
        f"row{'s' if len(parsed.problems) != 1 else ''} — {shown}{tail}. Correct the file and import it again."
    )


def _chunks(items: Sequence[Any], size: int = _LOOKUP_CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _insert(session: Session):
    """The dialect's INSERT with ON CONFLICT support (SQLite and PostgreSQL both have it)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _upsert(session: Session, parsed: _Parsed) -> dict[str, int]:
    """Write the parsed file: only what is new or changed, each table in bulk.

    Core ``INSERT … ON CONFLICT`` statements on the tables (not the ORM's bulk path, which is
    several times slower) executed with many parameter sets at once.
    """
    insert = _insert(session)
    result = {"rows": parsed.rows}

    # Children: new ones inserted, a changed domicile or birth date updated.
    existing: dict[str, tuple[int, dt.date, str]] = {}
    numbers = list(parsed.children)
    for part in _chunks(numbers):
        for id_, number, birth, nis in session.execute(
            sa.select(Child.id, Child.insz, Child.birth_date, Child.nis_code).where(Child.insz.in_(part))
        ):
            existing[number] = (id_, birth, nis)
    new_children = [n for n in numbers if n not in existing]
    changed_children = [n for n in numbers if n in existing and existing[n][1:] != parsed.children[n][:2]]
    rows = [
        {"insz": n, "birth_date": parsed.children[n][0], "nis_code": parsed.children[n][1]}
        for n in new_children + changed_children
    ]
    if rows:
        stmt = insert(Child.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["insz"],
            set_={"birth_date": stmt.excluded.birth_date, "nis_code": stmt.excluded.nis_code},
        )
        session.execute(stmt, rows)
    result["children_new"], result["children_updated"] = len(new_children), len(changed_children)

    # Beneficiaries: contact details are set only from columns the file has.
    existing_ben: dict[str, tuple[int, dict[str, str | None]]] = {}
    numbers = list(parsed.beneficiaries)
    for part in _chunks(numbers):
        for row in session.execute(
            sa.select(
                Beneficiary.id, Beneficiary.insz, Beneficiary.email, Beneficiary.address_line,
                Beneficiary.postcode, Beneficiary.city,
            ).where(Beneficiary.insz.in_(part))
        ):
            existing_ben[row.insz] = (
                row.id,
                {
                    "beneficiary_email": row.email,
                    "beneficiary_address_line": row.address_line,
                    "beneficiary_postcode": row.postcode,
                    "beneficiary_city": row.city,
                },
            )
    columns = {
        "beneficiary_email": "email",
        "beneficiary_address_line": "address_line",
        "beneficiary_postcode": "postcode",
        "beneficiary_city": "city",
    }
    new_ben = [n for n in numbers if n not in existing_ben]
    changed_ben = [
        n for n in numbers
        if n in existing_ben
        and any(existing_ben[n][1][c] != v for c, v in parsed.beneficiaries[n][0].items())
    ]
    # Group by the set of contact columns given, so every executemany batch has one shape.
    by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for n in new_ben + changed_ben:
        contact = parsed.beneficiaries[n][0]
        shape = tuple(sorted(contact))
        by_shape.setdefault(shape, []).append({"insz": n, **{columns[c]: v for c, v in contact.items()}})
    for shape, batch in by_shape.items():
        stmt = insert(Beneficiary.__table__)
        set_ = {columns[c]: getattr(stmt.excluded, columns[c]) for c in shape}
        if set_:
            stmt = stmt.on_conflict_do_update(index_elements=["insz"], set_=set_)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=["insz"])
        session.execute(stmt, batch)
    result["beneficiaries_new"], result["beneficiaries_updated"] = len(new_ben), len(changed_ben)

    # Ids of everyone in the file: the ones already there were read above (an upsert keeps a
    # row's id); only the new ones are looked up.
    child_ids = {n: row[0] for n, row in existing.items()}
    child_ids.update(_ids(session, Child, new_children))
    ben_ids = {n: row[0] for n, row in existing_ben.items()}
    ben_ids.update(_ids(session, Beneficiary, new_ben))

    # Entitlements: compare with what the store has for these children.
    current: dict[tuple[int, int, str, dt.date], dt.date | None] = {}
    for part in _chunks(sorted(set(child_ids.values()))):
        for c, b, s, start, end in session.execute(
            sa.select(
                Entitlement.child_id, Entitlement.beneficiary_id, Entitlement.supplement,
                Entitlement.start_date, Entitlement.end_date,
            ).where(Entitlement.child_id.in_(part))
        ):
            current[(c, b, s, start)] = end
    new_rows, changed_rows, unchanged = [], [], 0
    for (child, ben, supplement, start), (end, _line) in parsed.entitlements.items():
        key = (child_ids[child], ben_ids[ben], supplement, start)
        row = {"child_id": key[0], "beneficiary_id": key[1], "supplement": supplement, "start_date": start, "end_date": end}
        if key not in current:
            new_rows.append(row)
        elif current[key] != end:
            changed_rows.append(row)
        else:
            unchanged += 1
    if new_rows or changed_rows:
        stmt = insert(Entitlement.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["child_id", "beneficiary_id", "supplement", "start_date"],
            set_={"end_date": stmt.excluded.end_date},
        )
        session.execute(stmt, new_rows + changed_rows)
    result["entitlements_new"] = len(new_rows)
    result["entitlements_updated"] = len(changed_rows)
    result["entitlements_unchanged"] = unchanged
    return result


def _ids(session: Session, model: type[Child] | type[Beneficiary], numbers: list[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for part in _chunks(numbers):
        ids.update({number: id_ for id_, number in session.execute(sa.select(model.id, model.insz).where(model.insz.in_(part)))})
    return ids


def import_csv(path: str | pathlib.Path, *, url: str | None = None, actor: audit.Actor | None = None) -> dict[str, int]:
    """Import an entitlement CSV file into the store: validate all of it, then upsert.

    Header: ``child_insz,child_birth_date,child_nis,beneficiary_insz,supplement,start_date,end_date``
    optionally followed by ``beneficiary_email``, ``beneficiary_address_line``,
    ``beneficiary_postcode``, ``beneficiary_city``. ``supplement`` is ``sociale_toeslag``,
    ``zorgtoeslag`` or ``schooltoeslag``; dates are ISO; an empty ``end_date`` means ongoing.

    Any bad row refuses the whole file (:class:`InputError` naming line numbers and reasons,
    never values; the refusal is audited). Otherwise the rows are upserted in one transaction:
    importing the same file again changes nothing, and a row with a new ``end_date`` for the
    same child, beneficiary, supplement and ``start_date`` updates that period. Rows already in
    the store but absent from the file are left alone (an import adds and corrects; it does not
    replace — ``entitlements generate`` does).

    :returns: counts — ``rows``, ``children_new``/``_updated``, ``beneficiaries_new``/``_updated``,
        ``entitlements_new``/``_updated``/``_unchanged``.
    """
    path = pathlib.Path(path)
    actor = actor or audit.Actor.current_user()
    parsed = _validate(path)
    if parsed.problems:
        _audit_refusal(parsed, actor, url)
        raise InputError(_refusal_message(path, parsed))
    with session_scope(url) as session:
        result = _upsert(session, parsed)
        audit.record(
            session,
            "entitlements.imported",
            "success",
            actor=actor,
            data_categories=["child", "beneficiary", "entitlement"],
            file_hashes={"import_file": parsed.sha256},
            counts=result,
            message="entitlement CSV imported into the store",
        )
    log.info("entitlement import: %s", ", ".join(f"{k}={v}" for k, v in result.items()))
    return result


def _audit_refusal(parsed: _Parsed, actor: audit.Actor, url: str | None) -> None:
    try:
        with session_scope(url) as session:
            audit.record(
                session,
                "entitlements.imported",
                "refused",
                actor=actor,
                file_hashes={"import_file": parsed.sha256},
                counts={"rows": parsed.rows, "bad_rows": len(parsed.problems)},
                message="entitlement CSV refused: bad rows, nothing imported",
            )
    except sa.exc.SQLAlchemyError:
        # The refusal itself must still reach the operator even when the database is down.
        log.warning("could not audit the refused entitlement import", exc_info=True)
