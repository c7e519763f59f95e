"""``entitlements generate`` and ``entitlements import`` at full scale, beside a naive baseline.

What runs, each in a fresh SQLite database under ``var/bench/`` (its own process, so peak
memory is the command's own):

* the generator: ``welfare-exchange entitlements generate --children N --seed 1``
  (``WELFARE_EXCHANGE_BENCH_GENERATE_CHILDREN``, default 2,000,000) — wall time and peak RSS;
* the import: a CSV of every entitlement of a 300,000-child store (~200,000 rows, the size
  of the largest request files), imported into an empty store, then imported again
  (idempotent: nothing changes);
* the baseline: the same generated rows added one ORM object at a time (``session.add``) for
  the first 20,000 children, extrapolated — what "not bulk" would cost.

Figures are reported as seconds and ratios, never as pass/fail.
"""

from __future__ import annotations

import csv
import os
import pathlib
import subprocess
import sys
import time

from bench.common import bench_home


def _folder() -> pathlib.Path:
    folder = bench_home() / "generate"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _fresh(path: pathlib.Path) -> str:
    from welfare_exchange.db import upgrade

    for leftover in (path, pathlib.Path(f"{path}-wal"), pathlib.Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    upgrade(url)
    return url


def _timed_child(code: str, url: str) -> tuple[float, float]:
    """Run ``code`` in a child Python with the project DB at ``url``; (seconds, peak RSS MB)."""
    script = (
        "import resource, time\n"
        f"{code}\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    env = {**os.environ, "WELFARE_EXCHANGE_DB_URL": url}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - started, float(out.strip().splitlines()[-1])


def _baseline(children: int) -> float:
    """Seconds to add ``children`` generated children (with their rows) one ORM object at a time."""
    from welfare_exchange.db import session_scope
    from welfare_exchange.db.models import Beneficiary, Child, Entitlement
    from welfare_exchange.entitlements.generator import _Generator

    url = _fresh(_folder() / "baseline.db")
    gen = _Generator(children, 1, children)
    chunk = next(gen.chunks())
    started = time.perf_counter()
    with session_scope(url) as session:
        for id_, number, born, nis in chunk.children:
            session.add(Child(id=id_, insz=number, birth_date=_date(born), nis_code=nis))
        for id_, number, email, line, postcode, city in chunk.beneficiaries:
            session.add(Beneficiary(id=id_, insz=number, email=email, address_line=line, postcode=postcode, city=city))
        session.flush()
        for id_, child, ben, supplement, start, end in chunk.entitlements:
            session.add(Entitlement(id=id_, child_id=child, beneficiary_id=ben, supplement=supplement,
                                    start_date=_date(start), end_date=_date(end) if end else None))
    return time.perf_counter() - started


def _date(text: str):
    import datetime as dt

    return dt.date.fromisoformat(text)


def main() -> dict:
    import sqlalchemy as sa

    from welfare_exchange.db import get_engine

    children = int(os.environ.get("WELFARE_EXCHANGE_BENCH_GENERATE_CHILDREN", "2000000"))
    folder = _folder()
    results: dict = {"children": children}

    url = _fresh(folder / "generate.db")
    seconds, peak = _timed_child(
        f"from welfare_exchange.entitlements import generate; generate({children}, 1, progress=False)", url
    )
    results["generate_seconds"], results["generate_peak_rss_mb"] = round(seconds, 1), round(peak)
    print(f"   generate {children:,} children: {seconds:.1f} s, peak RSS {peak:.0f} MB", flush=True)

    baseline_children = 20_000
    baseline = _baseline(baseline_children) * children / baseline_children
    results["orm_row_by_row_extrapolated_seconds"] = round(baseline, 1)
    results["speedup_vs_orm"] = round(baseline / seconds, 1)
    print(f"   ORM row by row (extrapolated): {baseline:.0f} s — bulk is {baseline / seconds:.1f}x faster", flush=True)

    # An import file of ~200k rows, taken from a 300k-child store.
    source = _fresh(folder / "import-source.db")
    _timed_child("from welfare_exchange.entitlements import generate; generate(300_000, 2, progress=False)", source)
    extract = folder / "import.csv"
    try:
        with get_engine(source).connect() as conn, open(extract, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["child_insz", "child_birth_date", "child_nis", "beneficiary_insz", "supplement", "start_date", "end_date"])
            rows = conn.execute(sa.text(
                "SELECT c.insz, c.birth_date, c.nis_code, b.insz, e.supplement, e.start_date, coalesce(e.end_date, '') "
                "FROM entitlement e JOIN child c ON c.id = e.child_id JOIN beneficiary b ON b.id = e.beneficiary_id ORDER BY e.id"
            ))
            count = 0
            for row in rows:
                writer.writerow(row)
                count += 1
        get_engine(source).dispose()
        target = _fresh(folder / "import-target.db")
        code = f"from welfare_exchange.entitlements import import_csv; import_csv({str(extract)!r})"
        first, peak = _timed_child(code, target)
        again, _ = _timed_child(code, target)
    finally:
        extract.unlink(missing_ok=True)  # synthetic, but INSZ-shaped: never left lying around, even after a failure
    results.update(import_rows=count, import_seconds=round(first, 1), import_again_seconds=round(again, 1),
                   import_peak_rss_mb=round(peak))
    print(f"   import {count:,} rows: {first:.1f} s (again, unchanged: {again:.1f} s), peak RSS {peak:.0f} MB", flush=True)
    return results


if __name__ == "__main__":
    print(main())
