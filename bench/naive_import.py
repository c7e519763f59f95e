"""The entitlement import as it was before the bitemporal store — the baseline of ``bench_import``.

Reads the whole file into memory (bytes, then text), validates it into dicts of every child,
beneficiary and entitlement (cross-row checks in Python), then upserts with ``INSERT … ON
CONFLICT`` into the pre-0008 schema (revision 0004): memory grows with the file (1.63 GB for
993,629 rows when it was measured in production-like conditions). Row checks are the project's
own (:func:`welfare_exchange.entitlements.importer._check_row`), so only the way of working differs.

Usage: ``python bench/naive_import.py FILE.csv DB_URL`` — prints the counts.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import pathlib
import sys

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from welfare_exchange.entitlements.importer import CONTACT, _check_row
from welfare_exchange.entitlements.store import REQUIRED_COLUMNS, _read_header

_CHUNK = 5000
_META = sa.MetaData()
CHILD = sa.Table("child", _META, sa.Column("id", sa.Integer, primary_key=True), sa.Column("insz", sa.String),
                 sa.Column("birth_date", sa.Date), sa.Column("nis_code", sa.String))
BENEFICIARY = sa.Table("beneficiary", _META, sa.Column("id", sa.Integer, primary_key=True), sa.Column("insz", sa.String),
                       *(sa.Column(c, sa.String) for c in CONTACT.values()))
ENTITLEMENT = sa.Table("entitlement", _META, sa.Column("id", sa.Integer, primary_key=True), sa.Column("child_id", sa.Integer),
                       sa.Column("beneficiary_id", sa.Integer), sa.Column("supplement", sa.String),
                       sa.Column("start_date", sa.Date), sa.Column("end_date", sa.Date))


def parse(path: pathlib.Path) -> tuple[int, dict, dict, dict]:
    """The whole file in dicts: children, beneficiaries, entitlements (as the old import kept them)."""
    text = path.read_bytes().decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = _read_header(reader)
    contact_columns = header[len(REQUIRED_COLUMNS):]
    rows, children, beneficiaries, entitlements = 0, {}, {}, {}
    for record in reader:
        if not record or record == [""]:
            continue
        rows += 1
        row, problem = _check_row(record, len(header), contact_columns)
        if problem:
            raise SystemExit(f"line {reader.line_num}: {problem}")
        child, birth, nis, ben, supplement, start, end, *contact = row
        children.setdefault(child, (dt.date.fromisoformat(birth), nis, reader.line_num))
        beneficiaries.setdefault(ben, (dict(zip(CONTACT.values(), contact)), reader.line_num))
        key = (child, ben, supplement, dt.date.fromisoformat(start))
        entitlements.setdefault(key, (dt.date.fromisoformat(end) if end else None, reader.line_num))
    return rows, children, beneficiaries, entitlements


def _ids(conn, table, numbers) -> dict[str, int]:
    ids = {}
    for i in range(0, len(numbers), _CHUNK):
        part = numbers[i:i + _CHUNK]
        ids.update({n: id_ for id_, n in conn.execute(sa.select(table.c.id, table.c.insz).where(table.c.insz.in_(part)))})
    return ids


def upsert(url: str, parsed: tuple[int, dict, dict, dict]) -> dict[str, int]:
    rows, children, beneficiaries, entitlements = parsed
    engine = sa.create_engine(url)
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    with engine.begin() as conn:
        stmt = insert(CHILD)
        conn.execute(stmt.on_conflict_do_update(index_elements=["insz"], set_={"birth_date": stmt.excluded.birth_date,
                                                                              "nis_code": stmt.excluded.nis_code}),
                     [{"insz": n, "birth_date": b, "nis_code": nis} for n, (b, nis, _) in children.items()])
        stmt = insert(BENEFICIARY)
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["insz"]),
                     [{"insz": n, **contact} for n, (contact, _) in beneficiaries.items()])
        child_ids, ben_ids = _ids(conn, CHILD, list(children)), _ids(conn, BENEFICIARY, list(beneficiaries))
        stmt = insert(ENTITLEMENT)
        conn.execute(
            stmt.on_conflict_do_update(index_elements=["child_id", "beneficiary_id", "supplement", "start_date"],
                                       set_={"end_date": stmt.excluded.end_date}),
            [{"child_id": child_ids[c], "beneficiary_id": ben_ids[b], "supplement": s, "start_date": start, "end_date": end}
             for (c, b, s, start), (end, _) in entitlements.items()],
        )
    engine.dispose()
    return {"rows": rows, "children": len(children), "beneficiaries": len(beneficiaries), "entitlements": len(entitlements)}


if __name__ == "__main__":
    print(upsert(sys.argv[2], parse(pathlib.Path(sys.argv[1]))))
