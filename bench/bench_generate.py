"""``entitlements generate`` at full scale, beside a naive baseline.

What runs, each in a fresh SQLite database under ``var/bench/`` (its own process, so peak
memory is the command's own):

* the generator: ``welfare-exchange entitlements generate --children N --seed 1``
  (``WELFARE_EXCHANGE_BENCH_GENERATE_CHILDREN``, default 2,000,000) — wall time and peak RSS;
* the baseline: the same generated rows added one ORM object at a time (``session.add``) for
  the first 20,000 children, extrapolated — what "not bulk" would cost.

The import is measured by ``bench_import``.

Figures are reported as seconds and ratios, never as pass/fail.
"""

from __future__ import annotations

import os
import pathlib
import time

from bench.common import bench_home, fresh_sqlite, timed_child


def _folder() -> pathlib.Path:
    folder = bench_home() / "generate"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _baseline(children: int) -> float:
    """Seconds to add ``children`` generated children (with their rows) one ORM object at a time."""
    from welfare_exchange.db import session_scope
    from welfare_exchange.db.models import Beneficiary, Child, Entitlement
    from welfare_exchange.entitlements.generator import _Generator

    url = fresh_sqlite(_folder() / "baseline.db")
    gen = _Generator(children, 1, children)
    chunk = next(gen.chunks())
    started = time.perf_counter()
    with session_scope(url) as session:
        for id_, number, born, nis in chunk.children:
            session.add(Child(id=id_, insz=number, birth_date=_date(born), nis_code=nis))
        for id_, number, email, line, postcode, city in chunk.beneficiaries:
            session.add(Beneficiary(id=id_, insz=number, email=email, address_line=line, postcode=postcode, city=city))
        session.flush()
        for id_, child, ben, supplement, start, end, recorded_from, recorded_to in chunk.entitlements:
            session.add(Entitlement(id=id_, child_id=child, beneficiary_id=ben, supplement=supplement,
                                    start_date=_date(start), end_date=_date(end) if end else None,
                                    recorded_from=_moment(recorded_from), recorded_to=_moment(recorded_to)))
    return time.perf_counter() - started


def _date(text: str):
    import datetime as dt

    return dt.date.fromisoformat(text)


def _moment(text: str | None):
    import datetime as dt

    return None if text is None else dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)


def main() -> dict:
    children = int(os.environ.get("WELFARE_EXCHANGE_BENCH_GENERATE_CHILDREN", "2000000"))
    folder = _folder()
    results: dict = {"children": children}

    url = fresh_sqlite(folder / "generate.db")
    seconds, peak, _ = timed_child(
        f"from welfare_exchange.entitlements import generate; generate({children}, 1, progress=False)", url
    )
    results["generate_seconds"], results["generate_peak_rss_mb"] = round(seconds, 1), round(peak)
    print(f"   generate {children:,} children: {seconds:.1f} s, peak RSS {peak:.0f} MB", flush=True)

    baseline_children = 20_000
    baseline = _baseline(baseline_children) * children / baseline_children
    results["orm_row_by_row_extrapolated_seconds"] = round(baseline, 1)
    results["speedup_vs_orm"] = round(baseline / seconds, 1)
    print(f"   ORM row by row (extrapolated): {baseline:.0f} s — bulk is {baseline / seconds:.1f}x faster", flush=True)
    return results


if __name__ == "__main__":
    print(main())
