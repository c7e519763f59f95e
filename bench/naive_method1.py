"""The naive Method 1 script the benchmark compares against: what a person would write with
pandas and openpyxl. Run as ``python bench/naive_method1.py REQUEST PASSWORD_FILE DB_URL OUT``."""

from __future__ import annotations

import io
import sys

import msoffcrypto
import pandas as pd
import sqlalchemy as sa


def main(request: str, password_file: str, db_url: str, out: str) -> None:
    password = open(password_file).read().strip()
    office = msoffcrypto.OfficeFile(open(request, "rb"))
    office.load_key(password=password)
    plain = io.BytesIO()
    office.decrypt(plain)
    frame = pd.read_excel(plain, engine="openpyxl", dtype=str)
    frame = frame.rename(columns={frame.columns[0]: "insz"})[["insz"]].drop_duplicates()
    store = pd.read_sql(
        sa.text(
            "SELECT c.insz AS insz, b.insz AS beneficiary, e.start_date, e.end_date FROM entitlement e "
            "JOIN child c ON c.id = e.child_id JOIN beneficiary b ON b.id = e.beneficiary_id "
            "WHERE e.supplement = 'sociale_toeslag' AND (e.end_date IS NULL OR e.end_date >= '2020-03-01') "
            "AND e.recorded_to IS NULL"
        ),
        sa.create_engine(db_url),
    )
    merged = frame.merge(store, on="insz")
    result = merged.groupby(["insz", "beneficiary"], as_index=False).agg(start=("start_date", "min"), end=("end_date", "max"))
    buffer = io.BytesIO()
    result.to_excel(buffer, engine="openpyxl", index=False)
    buffer.seek(0)
    encrypted = io.BytesIO()
    office = msoffcrypto.OfficeFile(buffer)
    office.encrypt(password, encrypted)
    open(out, "wb").write(encrypted.getvalue())
    print(len(result))


if __name__ == "__main__":
    main(*sys.argv[1:5])
