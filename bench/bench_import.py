"""``entitlements import`` at the size of the agency's extract: rows/s and peak memory, beside the
import as it was, measured in the same run.

What runs, each import in its own process (so its peak RSS is its own) on a fresh SQLite
database under ``var/bench/import/``:

* extracts of 1,000,000 and 5,000,000 rows (``WELFARE_EXCHANGE_BENCH_IMPORT_ROWS``), written
  from the synthetic generator's stream (the current entitlements of ~1.5 and ~7.5 million
  children; INSZ-shaped, so deleted right after use);
* **ours**: ``import_csv`` of each extract into an empty store (a full extract), and the 1M
  extract once more into the filled store (nothing changed: every row compared, nothing
  written) — seconds, rows/s, peak RSS;
* **the import as it was** (``bench/naive_import.py``: the whole file in memory, then
  ``INSERT … ON CONFLICT`` into the pre-0008 schema) on the 1M extract. Not run on 5M: it
  would need several GB (the issue measured 1.63 GB for 993,629 rows);
* on PostgreSQL, when reachable (``WELFARE_EXCHANGE_BENCH_PG_URL``, the test server by default):
  ours on the 1M extract through ``COPY``.

Reported as figures and ratios, never pass/fail; the target is a peak under 400 MB whatever the
size.
"""

from __future__ import annotations

import csv
import os
import pathlib
import time
import uuid

import sqlalchemy as sa

from bench.common import ROOT, bench_home, fresh_sqlite, timed_child

HEADER = ["child_insz", "child_birth_date", "child_nis", "beneficiary_insz", "supplement", "start_date", "end_date"]
PG_ADMIN = os.environ.get("WELFARE_EXCHANGE_BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def write_extract(path: pathlib.Path, rows: int, seed: int = 1) -> int:
    """The current entitlements of a generated store, streamed to ``path`` until ``rows`` rows."""
    from welfare_exchange.entitlements.generator import _Generator

    written = 0
    gen = _Generator(10 * rows, seed, 50_000)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for chunk in gen.chunks():
            children = {c[0]: c for c in chunk.children}
            beneficiaries = {b[0]: b[1] for b in chunk.beneficiaries}
            for _id, child, ben, supplement, start, end, _recorded, superseded in chunk.entitlements:
                if superseded is None and written < rows:
                    _, number, born, nis = children[child]
                    writer.writerow((number, born, nis, beneficiaries[ben], supplement, start, end or ""))
                    written += 1
            if written >= rows:
                break
    return written


def _ours(extract: pathlib.Path, url: str) -> tuple[float, float, str]:
    return timed_child(
        f"from welfare_exchange.entitlements import import_csv; print(import_csv({str(extract)!r}, progress=False))", url
    )


def _naive(extract: pathlib.Path, url: str) -> tuple[float, float, str]:
    return timed_child(
        "import runpy, sys\n"
        f"sys.argv = ['naive_import.py', {str(extract)!r}, {url!r}]\n"
        f"runpy.run_path({str(ROOT / 'bench' / 'naive_import.py')!r}, run_name='__main__')",
        url,
    )


def _postgres(extract: pathlib.Path) -> dict | None:
    from welfare_exchange.db import upgrade
    from welfare_exchange.db.engine import dispose_engines

    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"wx_bench_import_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError:
        print("   PostgreSQL not reachable: skipped", flush=True)
        return None
    url = sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        dispose_engines()
        seconds, peak, _ = _ours(extract, url)
        return {"seconds": round(seconds, 1), "peak_rss_mb": round(peak)}
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def main() -> dict:
    sizes = [int(n) for n in os.environ.get("WELFARE_EXCHANGE_BENCH_IMPORT_ROWS", "1000000,5000000").split(",")]
    folder = bench_home() / "import"
    folder.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    for i, size in enumerate(sizes):
        extract = folder / f"extract-{size}.csv"
        try:
            started = time.perf_counter()
            rows = write_extract(extract, size)
            mb = extract.stat().st_size / 2**20
            print(f"   extract of {rows:,} rows ({mb:.0f} MB) written in {time.perf_counter() - started:.0f} s", flush=True)
            url = fresh_sqlite(folder / "ours.db")
            seconds, peak, _ = _ours(extract, url)
            entry = {"rows": rows, "file_mb": round(mb), "seconds": round(seconds, 1), "rows_per_second": round(rows / seconds),
                     "peak_rss_mb": round(peak)}
            print(f"   ours, {rows:,} rows into an empty store: {seconds:.1f} s, {rows / seconds:,.0f} rows/s, "
                  f"peak RSS {peak:.0f} MB", flush=True)
            if i == 0:
                again, again_peak, _ = _ours(extract, url)
                entry.update(again_seconds=round(again, 1), again_rows_per_second=round(rows / again),
                             again_peak_rss_mb=round(again_peak))
                print(f"   ours, the same extract again (nothing changes): {again:.1f} s, {rows / again:,.0f} rows/s, "
                      f"peak RSS {again_peak:.0f} MB", flush=True)
                old_url = fresh_sqlite(folder / "naive.db", revision="0004")
                naive, naive_peak, _ = _naive(extract, old_url)
                entry.update(naive_seconds=round(naive, 1), naive_rows_per_second=round(rows / naive),
                             naive_peak_rss_mb=round(naive_peak), speedup_vs_naive=round(naive / seconds, 2),
                             memory_vs_naive=round(naive_peak / peak, 1))
                print(f"   the import as it was (whole file in memory, ON CONFLICT upsert): {naive:.1f} s, "
                      f"{rows / naive:,.0f} rows/s, peak RSS {naive_peak:.0f} MB → ours {naive / seconds:.2f}× the speed, "
                      f"{naive_peak / peak:.1f}× less memory", flush=True)
                postgres = _postgres(extract)
                if postgres:
                    entry["postgresql"] = postgres
                    print(f"   ours on PostgreSQL (COPY), {rows:,} rows: {postgres['seconds']} s, "
                          f"{rows / postgres['seconds']:,.0f} rows/s, peak RSS {postgres['peak_rss_mb']} MB", flush=True)
            results[str(size)] = entry
        finally:
            extract.unlink(missing_ok=True)  # synthetic, but INSZ-shaped: never left lying around
            for db in ("ours.db", "naive.db"):
                for suffix in ("", "-wal", "-shm"):
                    pathlib.Path(f"{folder / db}{suffix}").unlink(missing_ok=True)
    return results


if __name__ == "__main__":
    print(main())
