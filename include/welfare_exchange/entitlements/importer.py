"""``entitlements import``: the agency's extract into the bitemporal store, streamed.

By default the file is the agency's **full extract**: afterwards the store's current knowledge
is exactly the file. An entitlement (child, beneficiary, supplement, start date) that is new gets
a version; one whose end date changed gets a new version and its old one is closed; one absent
from the file is **withdrawn** — its version is closed, never deleted. A **delta** file
(``delta=True``) only adds and corrects: what it does not mention stays as it is.

Every change is recorded at one moment (``recorded_at``, the import's), so the store can say
what it knew at any moment before (:mod:`welfare_exchange.entitlements.history`).

**Constant memory, whatever the file's size.** Three phases in one transaction:

1. *read* — the CSV is streamed; each row is checked on its own (a bad row is named by line
   number and reason, never by value) and the good rows go in chunks into a temporary table
   (``COPY`` on PostgreSQL, ``executemany`` on SQLite). Progress (rows, rows/s, ETA) goes to the
   log and, on a terminal, to a progress bar.
2. *check* — rows that contradict each other (the same child with another birth date or
   domicile, the same entitlement with another end date, …) are found by SQL over that table.
   Any bad row refuses the whole file: nothing is imported, the refusal is audited.
3. *apply* — set-based statements: children and beneficiaries inserted or updated, entitlement
   versions closed and added; the **shrink guard** refuses a full extract that would withdraw more
   than ``WELFARE_EXCHANGE_IMPORT_MAX_WITHDRAWN_PERCENT`` (5 %) of the current entitlements —
   a truncated extract must never wipe the store — unless ``allow_shrink`` confirms it.

No function here logs, prints or puts in an exception message an INSZ number.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import functools
import hashlib
import io
import logging
import pathlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange import audit
from welfare_exchange.db.engine import get_engine, session_scope
from welfare_exchange import municipalities
from welfare_exchange.entitlements import history
from welfare_exchange.db.models import SUPPLEMENTS
from welfare_exchange.entitlements.progress import Progress
from welfare_exchange.entitlements.store import (
    _CONTACT_LIMITS,
    BulkLoader,
    MAX_REPORTED,
    REQUIRED_COLUMNS,
    _insz_problem,
    _parse_date,
    _read_header,
)
from welfare_exchange.errors import InputError
from welfare_exchange.settings import get_settings

log = logging.getLogger(__name__)

FULL, DELTA = "full", "delta"
#: Rows per chunk written to the temporary table (memory stays proportional to it).
CHUNK_ROWS = 20_000
#: The temporary tables of one import (names are constants, never input).
EXTRACT, CHILDREN, BENEFICIARIES, KEYS, KEYED = "wx_extract", "wx_children", "wx_beneficiaries", "wx_keys", "wx_entitlements"
#: Extract column -> beneficiary column.
CONTACT = {
    "beneficiary_email": "email",
    "beneficiary_address_line": "address_line",
    "beneficiary_postcode": "postcode",
    "beneficiary_city": "city",
}
_NO_CONTACT = (None,) * len(CONTACT)
STAGED = ("line", "child_insz", "birth_date", "nis_code", "beneficiary_insz", "supplement", "start_date", "end_date",
          *CONTACT.values())
#: SQLite page cache during the import, KiB (the import's joins and sorts run in it).
SQLITE_CACHE_KIB = 65536

parse_date = functools.lru_cache(maxsize=65536)(_parse_date)  # a few thousand distinct days


class ImportRefused(InputError):
    """The import file was refused; nothing was imported."""


@dataclass
class _Problems:
    """Bad rows: their count and the first :data:`MAX_REPORTED` (line, reason), in line order."""

    count: int = 0
    shown: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line: int, reason: str) -> None:
        self.count += 1
        if len(self.shown) < MAX_REPORTED:
            self.shown.append((line, reason))

    def merge(self, other: _Problems) -> None:
        self.count += other.count
        self.shown = sorted(self.shown + other.shown)[:MAX_REPORTED]


class _CountingReader(io.RawIOBase):
    """A binary file read through: counts bytes (progress) and hashes them (the audit)."""

    def __init__(self, raw) -> None:
        self.raw, self.read_bytes, self.sha256 = raw, 0, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        if n:
            self.read_bytes += n
            self.sha256.update(memoryview(buffer)[:n])
        return n


def _check_row(record: list[str], width: int, contact_columns: list[str]) -> tuple[tuple | None, str | None]:
    """One row on its own: ``(staged row without line, None)`` or ``(None, reason)`` — never quoting a value."""
    if len(record) != width:
        return None, f"has {len(record)} fields, the header has {width}"
    values = [v.strip() for v in record]
    child_raw, birth_raw, nis, ben_raw, supplement, start_raw, end_raw = values[: len(REQUIRED_COLUMNS)]
    birth = parse_date(birth_raw)
    child, problem = _insz_problem("child_insz", child_raw, birth)
    if problem:
        return None, problem
    if birth is None:
        return None, "child_birth_date is not an ISO date (YYYY-MM-DD)"
    if not municipalities.is_known(nis):
        return None, "child_nis is not the NIS code of a Flemish municipality"
    beneficiary, problem = _insz_problem("beneficiary_insz", ben_raw)
    if problem:
        return None, problem
    if supplement not in SUPPLEMENTS:
        return None, "supplement must be one of " + ", ".join(SUPPLEMENTS)
    start = parse_date(start_raw)
    if start is None:
        return None, "start_date is not an ISO date (YYYY-MM-DD)"
    end = None
    if end_raw:
        end = parse_date(end_raw)
        if end is None:
            return None, "end_date is not an ISO date (YYYY-MM-DD) nor empty (ongoing)"
        if end < start:
            return None, "end_date is before start_date"
    if not contact_columns:
        return (child, birth_raw, nis, beneficiary, supplement, start_raw, end_raw or None, *_NO_CONTACT), None
    contact = dict.fromkeys(CONTACT)
    for column, value in zip(contact_columns, values[len(REQUIRED_COLUMNS) :]):
        if len(value) > _CONTACT_LIMITS[column]:
            return None, f"{column} is longer than {_CONTACT_LIMITS[column]} characters"
        if column == "beneficiary_email" and value and "@" not in value:
            return None, "beneficiary_email is not an e-mail address"
        contact[column] = value or None
    return (child, birth_raw, nis, beneficiary, supplement, start_raw, end_raw or None, *contact.values()), None


# --------------------------------------------------------------------------- the temporary tables


def _create_extract_table(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE {EXTRACT} (line BIGINT PRIMARY KEY, child_insz VARCHAR(11) NOT NULL, birth_date DATE NOT NULL, "
            "nis_code VARCHAR(5) NOT NULL, beneficiary_insz VARCHAR(11) NOT NULL, supplement VARCHAR(20) NOT NULL, "
            "start_date DATE NOT NULL, end_date DATE, email VARCHAR(250), address_line VARCHAR(250), postcode VARCHAR(10), "
            "city VARCHAR(120)) ON COMMIT DROP"
        )
    else:
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE {EXTRACT} (line INTEGER PRIMARY KEY, child_insz TEXT NOT NULL, birth_date TEXT NOT NULL, "
            "nis_code TEXT NOT NULL, beneficiary_insz TEXT NOT NULL, supplement TEXT NOT NULL, start_date TEXT NOT NULL, "
            "end_date TEXT, email TEXT, address_line TEXT, postcode TEXT, city TEXT)"
        )


def _write_rows(conn: sa.Connection, rows: list[tuple]) -> None:
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        if conn.dialect.name == "postgresql":
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows(rows)  # unquoted empty = NULL, values quoted as needed
            buffer.seek(0)
            cursor.copy_expert(f"COPY {EXTRACT} ({', '.join(STAGED)}) FROM STDIN WITH (FORMAT csv)", buffer)
        else:
            cursor.executemany(f"INSERT INTO {EXTRACT} VALUES ({', '.join('?' * len(STAGED))})", rows)
    finally:
        cursor.close()


def _temp_table(conn: sa.Connection, name: str, select: str, params: dict | None = None) -> None:
    """A temporary table made from ``select`` (dropped at commit on PostgreSQL, with the connection on SQLite)."""
    suffix = " ON COMMIT DROP" if conn.dialect.name == "postgresql" else ""
    conn.execute(sa.text(f"CREATE TEMP TABLE {name}{suffix} AS {select}"), params or {})


def _drop_temp_tables(conn: sa.Connection) -> None:
    if conn.dialect.name == "sqlite":
        for name in (EXTRACT, CHILDREN, BENEFICIARIES, KEYS, KEYED):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{name}")


# --------------------------------------------------------------------------- 1. read


@dataclass
class _Read:
    rows: int = 0
    sha256: str = ""
    contact_columns: list[str] = field(default_factory=list)
    problems: _Problems = field(default_factory=_Problems)


def _open(path: pathlib.Path):
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise InputError(f"import file not found: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read the import file {path}: {exc.strerror}") from None


def _read(conn: sa.Connection, raw, progress: Progress) -> _Read:
    """Stream the file into the extract table; the row-by-row problems (nothing staged once there is one)."""
    out = _Read()
    counting = _CountingReader(raw)
    try:
        text = io.TextIOWrapper(io.BufferedReader(counting, 1 << 20), encoding="utf-8-sig", newline="")  # Excel writes a BOM
        reader = csv.reader(text, strict=True)
        try:
            header = _read_header(reader)
            out.contact_columns = header[len(REQUIRED_COLUMNS) :]
            width, chunk, pending = len(header), [], 0
            for record in reader:
                if not record or record == [""]:
                    continue  # a blank line (often the last one)
                out.rows += 1
                pending += 1
                row, problem = _check_row(record, width, out.contact_columns)
                if problem:
                    out.problems.add(reader.line_num, problem)
                elif not out.problems.count:  # once the file is refused, nothing more is staged
                    chunk.append((reader.line_num, *row))
                if pending >= CHUNK_ROWS:
                    if chunk and not out.problems.count:
                        _write_rows(conn, chunk)
                    progress.advance(pending, counting.read_bytes)
                    chunk, pending = [], 0
            if chunk and not out.problems.count:
                _write_rows(conn, chunk)
            progress.advance(pending, counting.read_bytes)
        except csv.Error:
            # csv's message can quote the offending text: report only where it happened.
            out.problems.add(reader.line_num, "is not valid CSV (unbalanced quotes?)")
        except UnicodeDecodeError:
            raise InputError("the import file is not UTF-8 text; save it as CSV UTF-8") from None
        # The rest of the file (after a CSV error) still counts in the hash of what was given.
        while counting.read(1 << 20):
            pass
    finally:
        raw.close()
    out.sha256 = counting.sha256.hexdigest()
    return out


# --------------------------------------------------------------------------- 2. check


def _no_end(conn: sa.Connection) -> str:
    """An ongoing period's end as a comparable value (NULL never equals NULL in SQL)."""
    return "DATE '9999-12-31'" if conn.dialect.name == "postgresql" else "'9999-12-31'"


def _group(conn: sa.Connection, contact_columns: list[str]) -> None:
    """One row per child, per beneficiary and per entitlement of the extract, with what their
    rows say (lowest and highest value: rows agree when both are the same) and their first line.
    The check reads them, and the apply step writes the store from them."""
    _temp_table(conn, CHILDREN, (
        "SELECT child_insz AS insz, MIN(line) AS first_line, MIN(birth_date) AS birth_date, MAX(birth_date) AS birth_date_max, "
        f"MIN(nis_code) AS nis_code, MAX(nis_code) AS nis_code_max FROM {EXTRACT} GROUP BY child_insz"
    ))
    contact = "".join(f", MIN({c}) AS {c}, MAX({c}) AS {c}_max, COUNT({c}) AS {c}_count" for c in (CONTACT[c] for c in contact_columns))
    _temp_table(conn, BENEFICIARIES, (
        f"SELECT beneficiary_insz AS insz, MIN(line) AS first_line, COUNT(*) AS row_count{contact} FROM {EXTRACT} "
        "GROUP BY beneficiary_insz"
    ))
    _temp_table(conn, KEYS, (
        "SELECT child_insz, beneficiary_insz, supplement, start_date, MIN(line) AS first_line, "
        f"MIN(COALESCE(end_date, {_no_end(conn)})) AS end_value, MAX(COALESCE(end_date, {_no_end(conn)})) AS end_value_max "
        f"FROM {EXTRACT} GROUP BY child_insz, beneficiary_insz, supplement, start_date"
    ))
    if conn.dialect.name == "postgresql":  # temporary tables get no statistics by themselves
        for name in (EXTRACT, CHILDREN, BENEFICIARIES, KEYS):
            conn.exec_driver_sql(f"ANALYZE {name}")


def _conflicts(conn: sa.Connection, contact_columns: list[str]) -> _Problems:
    """Rows that contradict the first row about the same child, beneficiary or entitlement.

    The grouped tables tell which ones disagree at all (usually none, and then nothing more is
    read); only their rows are compared with their first row, to name the lines.
    """
    contact = [CONTACT[c] for c in contact_columns]
    checks = [
        (1, CHILDREN, "g.birth_date <> g.birth_date_max OR g.nis_code <> g.nis_code_max", "x.child_insz = g.insz",
         "x.birth_date <> f.birth_date OR x.nis_code <> f.nis_code",
         "child_birth_date or child_nis differs from line {first} for the same child"),
    ]
    if contact:
        checks.append((
            2, BENEFICIARIES, " OR ".join(f"g.{c} <> g.{c}_max OR (g.{c}_count > 0 AND g.{c}_count < g.row_count)" for c in contact),
            "x.beneficiary_insz = g.insz", " OR ".join(f"x.{c} IS DISTINCT FROM f.{c}" for c in contact),
            "beneficiary contact details differ from line {first} for the same beneficiary",
        ))
    same_key = ("x.child_insz = g.child_insz AND x.beneficiary_insz = g.beneficiary_insz AND x.supplement = g.supplement "
                "AND x.start_date = g.start_date")
    checks.append((
        3, KEYS, "g.end_value <> g.end_value_max", same_key, "x.end_date IS DISTINCT FROM f.end_date",
        "end_date conflicts with line {first} (same child, beneficiary, supplement and start_date)",
    ))
    parts, reasons = [], {}
    for kind, grouped, disagree, member, differs, reason in checks:
        if _count(conn, f"SELECT COUNT(*) FROM {grouped} g WHERE {disagree}"):
            parts.append(
                f"SELECT x.line AS line, {kind} AS kind, g.first_line AS first_line FROM {EXTRACT} x JOIN {grouped} g ON {member} "
                f"JOIN {EXTRACT} f ON f.line = g.first_line WHERE ({disagree}) AND ({differs})"
            )
            reasons[kind] = reason
    problems, last = _Problems(), None
    if parts:
        for line, kind, first in conn.execute(sa.text(" UNION ALL ".join(parts) + " ORDER BY line, kind")):
            if line != last:  # one reason per row: the first that applies
                problems.add(line, reasons[kind].format(first=first))
                last = line
    return problems


# --------------------------------------------------------------------------- 3. apply


def _count(conn: sa.Connection, sql: str, params: dict | None = None) -> int:
    return int(conn.execute(sa.text(sql), params or {}).scalar() or 0)


def _apply_people(conn: sa.Connection, contact_columns: list[str]) -> dict[str, int]:
    """Children and beneficiaries: new ones inserted, changed ones updated (from the columns given)."""
    counts: dict[str, int] = {}
    counts["children_updated"] = conn.execute(sa.text(
        f"UPDATE child SET birth_date = x.birth_date, nis_code = x.nis_code FROM {CHILDREN} x "
        "WHERE child.insz = x.insz AND (child.birth_date <> x.birth_date OR child.nis_code <> x.nis_code)"
    )).rowcount
    counts["children_new"] = conn.execute(sa.text(
        f"INSERT INTO child (insz, birth_date, nis_code) SELECT insz, birth_date, nis_code FROM {CHILDREN} x "
        "WHERE NOT EXISTS (SELECT 1 FROM child c WHERE c.insz = x.insz)"
    )).rowcount

    contact = [CONTACT[c] for c in contact_columns]
    counts["beneficiaries_updated"] = 0
    if contact:
        counts["beneficiaries_updated"] = conn.execute(sa.text(
            f"UPDATE beneficiary SET {', '.join(f'{c} = x.{c}' for c in contact)} FROM {BENEFICIARIES} x "
            f"WHERE beneficiary.insz = x.insz AND ({' OR '.join(f'beneficiary.{c} IS DISTINCT FROM x.{c}' for c in contact)})"
        )).rowcount
    counts["beneficiaries_new"] = conn.execute(sa.text(
        f"INSERT INTO beneficiary (insz{''.join(f', {c}' for c in contact)}) SELECT insz{''.join(f', {c}' for c in contact)} "
        f"FROM {BENEFICIARIES} x WHERE NOT EXISTS (SELECT 1 FROM beneficiary b WHERE b.insz = x.insz)"
    )).rowcount
    return counts


def _same(store: str) -> str:
    """SQL: the extract's entitlement ``k`` and the store's version ``store`` are the same entitlement."""
    return " AND ".join(f"k.{c} = {store}.{c}" for c in ("child_id", "beneficiary_id", "supplement", "start_date"))


def _apply_entitlements(conn: sa.Connection, mode: str, at: dt.datetime, allow_shrink: bool, path: pathlib.Path) -> dict[str, int]:
    """Close superseded (and, for a full extract, withdrawn) versions; add the new ones; all recorded ``at``."""
    _temp_table(conn, KEYED, (
        "SELECT c.id AS child_id, b.id AS beneficiary_id, x.supplement, x.start_date, "
        f"NULLIF(x.end_value, {_no_end(conn)}) AS end_date FROM {KEYS} x "
        "JOIN child c ON c.insz = x.child_insz JOIN beneficiary b ON b.insz = x.beneficiary_insz"
    ))
    conn.exec_driver_sql(f"CREATE INDEX ix_{KEYED} ON {KEYED} (child_id, beneficiary_id, supplement, start_date)")
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {KEYED}")
    stamp = {"at": at}
    moment = [sa.bindparam("at", type_=history.MOMENT)]
    counts = {"entitlements_withdrawn": 0}
    if mode == FULL:
        current = _count(conn, "SELECT COUNT(*) FROM entitlement WHERE recorded_to IS NULL")
        withdrawn = _count(conn, f"SELECT COUNT(*) FROM entitlement e WHERE e.recorded_to IS NULL AND NOT EXISTS "
                                 f"(SELECT 1 FROM {KEYED} k WHERE {_same('e')})")
        limit = get_settings().import_max_withdrawn_percent
        if withdrawn and not allow_shrink and withdrawn > current * limit / 100:
            raise ImportRefused(
                f"import of {path.name} refused, nothing was imported: as a full extract it would withdraw {withdrawn} of "
                f"the {current} current entitlements ({100 * withdrawn / current:.1f} %), more than the "
                f"{limit:g} % allowed (WELFARE_EXCHANGE_IMPORT_MAX_WITHDRAWN_PERCENT). A truncated extract looks like "
                "this: check the file is complete. If the agency really withdrew them, import it again with "
                "--allow-shrink (the import DAG: allow_shrink); a partial file is imported with --delta."
            )
        counts["entitlements_withdrawn"] = conn.execute(sa.text(
            f"UPDATE entitlement SET recorded_to = :at WHERE recorded_to IS NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {KEYED} k WHERE {_same('entitlement')})"
        ).bindparams(*moment), stamp).rowcount
    counts["entitlements_updated"] = conn.execute(sa.text(
        f"UPDATE entitlement SET recorded_to = :at WHERE recorded_to IS NULL AND EXISTS "
        f"(SELECT 1 FROM {KEYED} k WHERE {_same('entitlement')} "
        "AND k.end_date IS DISTINCT FROM entitlement.end_date)"
    ).bindparams(*moment), stamp).rowcount
    first_load = conn.exec_driver_sql("SELECT 1 FROM entitlement LIMIT 1").first() is None
    insert = sa.text(
        "INSERT INTO entitlement (child_id, beneficiary_id, supplement, start_date, end_date, recorded_from) "
        f"SELECT k.child_id, k.beneficiary_id, k.supplement, k.start_date, k.end_date, :at FROM {KEYED} k "
        + ("" if first_load else f"WHERE NOT EXISTS (SELECT 1 FROM entitlement e WHERE e.recorded_to IS NULL AND {_same('e')}) ")
        # In the store's key order: many new rows are appended instead of scattered.
        + "ORDER BY k.child_id, k.beneficiary_id, k.supplement, k.start_date"
    ).bindparams(*moment)
    if first_load:
        # The first load of an empty store: its indexes are built once at the end, by one sort
        # each, instead of millions of scattered inserts (as the generator loads).
        loader = BulkLoader(conn)
        loader.drop_secondary_indexes(("entitlement",))
        added = conn.execute(insert, stamp).rowcount
        loader.rebuild_indexes()
    else:
        added = conn.execute(insert, stamp).rowcount
    counts["entitlements_new"] = added - counts["entitlements_updated"]
    counts["entitlements_unchanged"] = _count(conn, f"SELECT COUNT(*) FROM {KEYED}") - added
    return counts


def _analyze_if_grown(conn: sa.Connection, changed: int) -> None:
    """Fresh planner statistics after a large change (SQLite keeps none up to date by itself)."""
    total = _count(conn, "SELECT COUNT(*) FROM entitlement")
    if changed > total / 10:
        for table in ("child", "beneficiary", "entitlement"):
            conn.exec_driver_sql(f"ANALYZE {table}")


# --------------------------------------------------------------------------- the whole import


@contextlib.contextmanager
def _import_connection(url: str | None) -> Iterator[sa.Connection]:
    """One connection and transaction for the three phases; on SQLite without the memory map
    (its pages would count as the import's memory) and with a larger page cache."""
    engine = get_engine(url)
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            saved = [conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("mmap_size", "cache_size")]
            conn.exec_driver_sql("PRAGMA mmap_size=0")
            conn.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            conn.exec_driver_sql(f"PRAGMA temp.cache_size=-{SQLITE_CACHE_KIB}")
            conn.commit()
        try:
            with conn.begin():
                yield conn
        finally:
            if sqlite:
                _drop_temp_tables(conn)
                conn.exec_driver_sql(f"PRAGMA mmap_size={int(saved[0])}")
                conn.exec_driver_sql(f"PRAGMA cache_size={int(saved[1])}")
                conn.commit()


def _recording_moment(session: Session, requested: dt.datetime | None) -> dt.datetime:
    """When this import's versions are recorded: now (or ``requested``), after anything recorded before."""
    last = history.last_recorded(session)
    if requested is not None:
        at = history.moment(requested)
        if last is not None and at <= last:
            raise InputError(
                f"the import cannot be recorded at {at.isoformat()}: the store already holds versions recorded up to "
                f"{last.isoformat()}, and its history only grows forward"
            )
        return at
    at = dt.datetime.now(dt.timezone.utc)
    if last is not None and at <= last:
        log.warning("the clock is behind the store's last recorded moment; the import is recorded just after it")
        at = last + dt.timedelta(microseconds=1)
    return at


def import_csv(
    path: str | pathlib.Path,
    *,
    url: str | None = None,
    actor: audit.Actor | None = None,
    delta: bool = False,
    allow_shrink: bool = False,
    recorded_at: dt.datetime | None = None,
    progress: bool | None = None,
) -> dict[str, int]:
    """Import an entitlement CSV file: the agency's full extract (default) or, with ``delta``, a partial one.

    Header: ``child_insz,child_birth_date,child_nis,beneficiary_insz,supplement,start_date,end_date``
    optionally followed by ``beneficiary_email``, ``beneficiary_address_line``,
    ``beneficiary_postcode``, ``beneficiary_city``. ``supplement`` is ``sociale_toeslag``,
    ``zorgtoeslag`` or ``schooltoeslag``; dates are ISO; an empty ``end_date`` means ongoing.

    Any bad row refuses the whole file (:class:`InputError` naming line numbers and reasons,
    never values; the refusal is audited); so does a full extract that would withdraw too much
    (see the module docstring). Importing the same file again changes nothing.

    :param delta: the file is partial: entitlements it does not mention are left as they are.
    :param allow_shrink: confirm a full extract that withdraws more than the allowed share.
    :param recorded_at: the moment the changes are recorded (default now); never before
        anything the store already recorded.
    :param progress: a progress bar on stderr (default: when stderr is a terminal).
    :returns: counts — ``rows``, ``children_new``/``_updated``, ``beneficiaries_new``/``_updated``,
        ``entitlements_new``/``_updated``/``_unchanged``/``_withdrawn``.
    """
    path = pathlib.Path(path)
    actor = actor or audit.Actor.current_user()
    mode = DELTA if delta else FULL
    started = time.monotonic()
    read = _Read()
    raw = _open(path)
    bar = Progress(f"import {path.name}", path.stat().st_size, bar=progress)
    try:
        with _import_connection(url) as conn:
            _create_extract_table(conn)
            read = _read(conn, raw, bar)
            if not read.problems.count:
                bar.phase(f"checking {read.rows:,} rows against each other", "checking")
                _group(conn, read.contact_columns)
                read.problems.merge(_conflicts(conn, read.contact_columns))
            if read.problems.count:
                raise ImportRefused(_refusal_message(path, read.problems))
            session = Session(bind=conn)
            bar.phase(f"applying the {mode} extract: children and beneficiaries", "applying: people")
            # People first: on SQLite the first statement on the store is then a write, which
            # waits for the write lock instead of failing on a read snapshot gone stale.
            counts: dict[str, Any] = {"rows": read.rows, **_apply_people(conn, read.contact_columns)}
            at = _recording_moment(session, recorded_at)
            bar.phase(f"applying the {mode} extract: entitlement versions recorded at {at.isoformat(timespec='seconds')}",
                      "applying: entitlements")
            counts.update(_apply_entitlements(conn, mode, at, allow_shrink, path))
            _analyze_if_grown(conn, counts["entitlements_new"] + counts["entitlements_updated"] + counts["entitlements_withdrawn"])
            audit.record(
                session,
                "entitlements.imported",
                "success",
                actor=actor,
                data_categories=["child", "beneficiary", "entitlement"],
                file_hashes={"import_file": read.sha256},
                counts=counts,
                message=f"entitlement CSV imported into the store as a {mode} extract, recorded at {at.isoformat()}"
                + (" (withdrawals beyond the allowed share confirmed)" if allow_shrink and counts["entitlements_withdrawn"] else ""),
            )
            session.flush()
            session.close()
    except ImportRefused:
        _audit_refusal(read, actor, url)
        raise
    finally:
        bar.close()
        raw.close()
    log.info("entitlement import done in %.1f s: %s", time.monotonic() - started, ", ".join(f"{k}={v}" for k, v in counts.items()))
    return counts


def _refusal_message(path: pathlib.Path, problems: _Problems) -> str:
    shown = "; ".join(f"line {line}: {reason}" for line, reason in problems.shown)
    more = problems.count - len(problems.shown)
    tail = f"; and {more} more bad rows" if more > 0 else ""
    return (
        f"import of {path.name} refused, nothing was imported: {problems.count} bad "
        f"row{'s' if problems.count != 1 else ''} — {shown}{tail}. Correct the file and import it again."
    )


def _audit_refusal(read: _Read, actor: audit.Actor, url: str | None) -> None:
    shrink = not read.problems.count
    try:
        with session_scope(url) as session:
            audit.record(
                session,
                "entitlements.imported",
                "refused",
                actor=actor,
                file_hashes={"import_file": read.sha256} if read.sha256 else None,
                counts={"rows": read.rows, "bad_rows": read.problems.count},
                message="entitlement CSV refused: it would withdraw more than the allowed share, nothing imported"
                if shrink else "entitlement CSV refused: bad rows, nothing imported",
            )
    except sa.exc.SQLAlchemyError:
        # The refusal itself must still reach the operator even when the database is down.
        log.warning("could not audit the refused entitlement import", exc_info=True)
