"""Feeds carry late changes: what the agency recorded during an interval is in that interval's
feed, whatever its valid dates — a retroactive grant, a retroactive end, a withdrawn right, a
corrected beneficiary — marked as retroactive; and a past interval rebuilt after such changes
gives byte-identical files (the knowledge as of then).

The store is filled the production way: full extracts imported at set moments.
"""

from __future__ import annotations

import csv
import datetime as dt
import random

from tests.dagutil import task_states
from tests.feeds.conftest import _numbers
from welfare_exchange.db import session_scope
from welfare_exchange.entitlements import import_csv
from welfare_exchange.feeds import changes, workbook
from welfare_exchange.feeds.changes import BENEFICIARY_CHANGED, ENDED, NEW, WITHDRAWN
from welfare_exchange.feeds.interval import FeedInterval

D = dt.date
UTC = dt.timezone.utc
JULY = dt.datetime(2026, 7, 15, 1, tzinfo=UTC)  # the extract everybody knew at the start of September
LATE = dt.datetime(2026, 10, 10, 1, tzinfo=UTC)  # an extract with retroactive decisions, after September's feed
SEP = FeedInterval(D(2026, 9, 1), D(2026, 10, 1))
OCT = FeedInterval(D(2026, 10, 1), D(2026, 11, 1))
HEADER = ["child_insz", "child_birth_date", "child_nis", "beneficiary_insz", "supplement", "start_date", "end_date"]


def people(nis: str, seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    used: set[str] = set()
    kids = dict(zip(("granted", "ended", "withdrawn", "corrected", "new", "steady"), _numbers(rng, used, D(2010, 1, 1), 6)))
    parents = dict(zip(("p_granted", "p_ended", "p_withdrawn", "p_wrong", "p_right", "p_new", "p_steady"),
                       _numbers(rng, used, D(1975, 1, 1), 7)))
    return {**kids, **parents}


def extract(n: dict[str, str], nis: str, *, late: bool) -> list[list[str]]:
    """The agency's full extract of one municipality in July, or in October after the late decisions."""
    def row(kid, parent, start, end=""):
        return [n[kid], "2010-01-01", nis, n[parent], "sociale_toeslag", start, end]

    rows = [
        row("steady", "p_steady", "2024-01-01"),
        row("new", "p_new", "2026-09-10"),  # known in advance, starts in September: September's news
        row("ended", "p_ended", "2024-01-01", "2026-09-20" if late else ""),  # ended retroactively
        row("corrected", "p_right" if late else "p_wrong", "2025-01-01"),  # paid to the wrong parent until corrected
    ]
    if late:
        rows.append(row("granted", "p_granted", "2026-09-15"))  # granted retroactively
    else:
        rows.append(row("withdrawn", "p_withdrawn", "2025-03-01"))  # withdrawn in October
    # The children's own rows must be consistent: the same birth date as their numbers carry.
    from welfare_exchange import insz

    for r in rows:
        r[1] = insz.birth_date(r[0]).isoformat()
    return rows


def import_extract(tmp_path, worlds: dict[str, dict[str, str]], *, late: bool) -> None:
    path = tmp_path / f"extract-{'late' if late else 'july'}.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for nis, numbers in worlds.items():
            writer.writerows(extract(numbers, nis, late=late))
    import_csv(path, recorded_at=LATE if late else JULY, allow_shrink=late, progress=False)


def expected(n: dict[str, str], month: str) -> list[tuple]:
    """(change, child, beneficiary, start, end, retroactive) of the feed of ``month``."""
    return {
        "2026-09": [(NEW, n["new"], n["p_new"], D(2026, 9, 10), None, False)],
        "2026-10": sorted([
            (NEW, n["granted"], n["p_granted"], D(2026, 9, 15), None, True),
            (ENDED, n["ended"], n["p_ended"], D(2024, 1, 1), D(2026, 9, 20), True),
            (WITHDRAWN, n["withdrawn"], n["p_withdrawn"], D(2025, 3, 1), None, True),
            (BENEFICIARY_CHANGED, n["corrected"], n["p_right"], D(2025, 1, 1), None, True),
        ], key=lambda r: r[1]),
    }[month]


def _as_tuples(rows) -> list[tuple]:
    return sorted(((c.change, c.child_insz, c.beneficiary_insz, c.period_start, c.period_end, c.retroactive) for c in rows),
                  key=lambda r: r[1])


class _Protocol:
    id, nis_code, municipality = 7, "44021", "Gent"
    legal_basis, purpose = "Groeipakketdecreet", "lokaal sociaal beleid"
    supplements = ["sociale_toeslag"]
    allowed_fields = ["child_insz", "beneficiary_insz", "period_start", "period_end"]


def test_late_changes_are_in_the_interval_that_recorded_them_and_a_backfill_is_byte_identical(project_db, tmp_path):
    worlds = {"44021": people("44021", 1), "11002": people("11002", 2)}
    import_extract(tmp_path, worlds, late=False)
    with session_scope() as session:
        september_then = changes.detect(session, worlds, SEP)
    first_build = workbook.build_workbook(_Protocol, SEP, september_then["44021"], D(2027, 1, 1))

    import_extract(tmp_path, worlds, late=True)  # recorded on 10 October, after September's feed
    with session_scope() as session:
        september_now = changes.detect(session, worlds, SEP)
        october = changes.detect(session, worlds, OCT)

    assert september_now == september_then  # the knowledge as of then
    assert workbook.build_workbook(_Protocol, SEP, september_now["44021"], D(2027, 1, 1)) == first_build
    for nis, numbers in worlds.items():
        assert _as_tuples(september_now[nis]) == expected(numbers, "2026-09")
        assert _as_tuples(october[nis]) == expected(numbers, "2026-10")
    tally = changes.counts(october["44021"])
    assert tally[changes.RETROACTIVE] == 4 and tally[WITHDRAWN] == 1


def test_the_dag_delivers_late_changes_in_the_next_feed_marked_retroactive(feed_world, tmp_path):
    world = feed_world(1, missing_key=None, store=False, nis=["12025"])
    [m] = world.municipalities
    numbers = people(m.nis, 3)
    import_extract(tmp_path, {m.nis: numbers}, late=False)
    september = world.run("2026-09")
    assert september.state == "success", task_states(september, by_map_index=True)
    [sent] = m.feeds().values()

    import_extract(tmp_path, {m.nis: numbers}, late=True)
    runs = [world.run("2026-09"), world.run("2026-10")]  # a back-fill of both months after the late decisions
    assert [r.state for r in runs] == ["success", "success"]

    feeds = m.feeds()
    [september_file] = [v for k, v in feeds.items() if "_2026-09-01_" in k]
    [october_file] = [v for k, v in feeds.items() if "_2026-10-01_" in k]
    assert september_file == sent
    sheet = m.open_feed(october_file)["Wijzigingen"]
    assert sheet[0] == ["Wijziging", "Met terugwerkende kracht", "INSZ kind", "INSZ begunstigde", "Begin periode",
                        "Einde periode (leeg = lopend)"]
    got = sorted(((r[0], r[2], r[3], r[1] == "ja") for r in sheet[1:]), key=lambda r: r[1])
    assert got == [(kind, child, parent, retro) for kind, child, parent, _, _, retro in expected(numbers, "2026-10")]
    info = dict((r[0], r[1]) for r in m.open_feed(october_file)["Info"])
    assert info["Met terugwerkende kracht"].startswith("4 ")
