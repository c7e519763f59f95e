"""Synthetic request files for tests and benchmarks: never real data.

Every INSZ number here is made by :func:`welfare_exchange.insz.make` from a random birth date
and serial at generation time; names and addresses are placeholders. Passwords are generated
with :mod:`secrets` and live only as long as the corpus.

Library (imported by ``tests/intake`` and ``bench/bench_intake.py``) and script::

    .venv/bin/python scripts/corpus/make_corpus.py OUTDIR [--rows N] [--no-libreoffice]

writes a small corpus (one file per encryption kind plus the 200,000-row request) and a
``passwords.json`` beside it, for trying the CLI by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import pathlib
import random
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import zipfile

import xlsxwriter

from welfare_exchange import insz
from welfare_exchange.intake import encrypt_agile

HERE = pathlib.Path(__file__).resolve().parent
LO_SCRIPT = HERE / "lo_encrypt.py"
#: The Python that has python3-uno (Debian's), not the project's venv.
SYSTEM_PYTHON = os.environ.get("WELFARE_EXCHANGE_UNO_PYTHON", "/usr/bin/python3")


class Formula(tuple):
    """A formula cell: ``Formula((formula, cached_value))``; the cached value may be ``None``."""


def new_password(length: int = 14) -> str:
    """A random password; 14 characters stays under the 15-character limit of xls."""
    alphabet = string.ascii_letters + string.digits + "-_.!"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def birth_in_window(as_of: dt.date, rng: random.Random, youngest: int = 0, oldest: int = 25) -> dt.date:
    """A birth date giving an age between ``youngest`` and ``oldest`` (inclusive) on ``as_of``."""
    latest = _years_before(as_of, youngest)
    earliest = _years_before(as_of, oldest + 1) + dt.timedelta(days=1)
    return earliest + dt.timedelta(days=rng.randrange((latest - earliest).days + 1))


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def children(n: int, as_of: dt.date, rng: random.Random, *, bis_share: float = 0.0) -> list[str]:
    """``n`` distinct valid INSZ numbers of people aged 0–25 on ``as_of``."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        number = insz.make(
            birth_in_window(as_of, rng), rng.randrange(1, 999), bis=rng.random() < bis_share
        )
        if number not in seen:
            seen.add(number)
            out.append(number)
    return out


def xlsx(sheets: dict[str, list[list[object]]], *, big: bool = False) -> bytes:
    """An unencrypted xlsx in memory. Cells: ``str`` as text, numbers as number cells,
    :class:`Formula` as a formula with its cached value, ``None`` as blank."""
    buf = io.BytesIO()
    book = xlsxwriter.Workbook(buf, {"in_memory": not big, "constant_memory": big, "strings_to_numbers": False})
    text_format = book.add_format({"num_format": "@"})
    for name, rows in sheets.items():
        sheet = book.add_worksheet(name)
        for r, row in enumerate(rows):
            for c, cell in enumerate(row):
                if cell is None:
                    continue
                if isinstance(cell, Formula):
                    formula, cached = cell
                    sheet.write_formula(r, c, formula, None, cached if cached is not None else 0)
                elif isinstance(cell, (int, float)):
                    sheet.write_number(r, c, cell)
                else:
                    sheet.write_string(r, c, str(cell), text_format)
    book.close()
    return buf.getvalue()


def request_rows(numbers: list[str]) -> list[list[object]]:
    """A typical request sheet: header, then INSZ with placeholder name and address columns
    (which the intake must ignore)."""
    rows: list[list[object]] = [["INSZ", "Naam", "Adres"]]
    rows += [[number, f"Kind {i}", f"Voorbeeldstraat {i}"] for i, number in enumerate(numbers, 1)]
    return rows


def big_request(n: int, as_of: dt.date, seed: int = 7) -> tuple[bytes, list[str]]:
    """A plain xlsx of ``n`` rows (INSZ, name, address) and its numbers."""
    numbers = children(n, as_of, random.Random(seed))
    return xlsx({"Kinderen": request_rows(numbers)}, big=True), numbers


def zip_bomb(unpacked_bytes: int = 300 * 1024 * 1024) -> bytes:
    """A well-formed xlsx with one extra part of zeros that unpacks to ``unpacked_bytes``."""
    buf = io.BytesIO(xlsx({"Blad1": [["INSZ"], ["x"]]}))
    with zipfile.ZipFile(buf, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("xl/media/padding.bin", "w", force_zip64=True) as part:
            block = b"\0" * (1 << 20)
            for _ in range(unpacked_bytes // len(block)):
                part.write(block)
    return buf.getvalue()


def libreoffice_encrypt(jobs: list[dict]) -> None:
    """Have LibreOffice write each job's rows encrypted (see ``lo_encrypt.py``).

    Each job: ``{"rows": [[...]], "out": path, "format": "xlsx"|"xls", "password": str,
    "text_columns": [1]}``. Raises when LibreOffice is missing or fails: callers (tests) must
    fail, not skip, because CI installs it.
    """
    work = pathlib.Path(tempfile.mkdtemp(prefix="we-corpus-"))
    try:
        lo_jobs = []
        for i, job in enumerate(jobs):
            csv_path = work / f"job{i}.csv"
            csv_path.write_text(_csv(job["rows"]), encoding="utf-8")
            lo_jobs.append({key: value for key, value in job.items() if key != "rows"} | {"csv": str(csv_path)})
        jobs_path = work / "jobs.json"
        jobs_path.write_text(json.dumps(lo_jobs), encoding="utf-8")
        os.chmod(jobs_path, 0o600)
        completed = subprocess.run(
            [SYSTEM_PYTHON, str(LO_SCRIPT), str(jobs_path)], capture_output=True, text=True, timeout=180
        )
        if completed.returncode != 0:
            raise RuntimeError(f"LibreOffice corpus script failed: {completed.stderr.strip()[-2000:]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _csv(rows: list[list[object]]) -> str:
    lines = []
    for row in rows:
        cells = []
        for cell in row:
            text = "" if cell is None else str(cell)
            cells.append('"' + text.replace('"', '""') + '"')
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=pathlib.Path)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--no-libreoffice", action="store_true")
    args = parser.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    as_of = dt.date.today()
    rng = random.Random()
    passwords = {}
    small = xlsx({"Kinderen": request_rows(children(50, as_of, rng, bis_share=0.1))})
    passwords["agile.xlsx"] = password = new_password()
    (args.outdir / "agile.xlsx").write_bytes(encrypt_agile(small, password))
    big, _ = big_request(args.rows, as_of)
    passwords["big_agile.xlsx"] = password = new_password()
    (args.outdir / "big_agile.xlsx").write_bytes(encrypt_agile(big, password))
    if not args.no_libreoffice:
        rows = request_rows(children(50, as_of, rng))
        jobs = []
        for name, fmt in (("standard.xlsx", "xlsx"), ("rc4.xls", "xls")):
            passwords[name] = password = new_password()
            jobs.append({"rows": rows, "out": str(args.outdir / name), "format": fmt, "password": password})
        libreoffice_encrypt(jobs)
    secrets_path = args.outdir / "passwords.json"
    secrets_path.write_text(json.dumps(passwords, indent=2), encoding="utf-8")
    os.chmod(secrets_path, 0o600)
    print(f"corpus written to {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
