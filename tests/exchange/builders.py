"""Synthetic worlds for exchange tests: a small entitlement store, request files, and the
independent (pure Python) computation of what a Method 1 result must contain."""

from __future__ import annotations

import datetime as dt
import io
import random
from collections import defaultdict
from dataclasses import dataclass, field

import xlsxwriter

from welfare_exchange import insz
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Beneficiary, Child, Entitlement
from welfare_exchange.intake import encrypt_agile

REFERENCE = dt.date(2020, 3, 1)


@dataclass
class World:
    children: list[tuple[str, dt.date]] = field(default_factory=list)
    beneficiaries: list[str] = field(default_factory=list)
    #: (child, beneficiary, supplement, start, end)
    entitlements: list[tuple[str, str, str, dt.date, dt.date | None]] = field(default_factory=list)


def _unique_numbers(rng: random.Random, n: int, first: dt.date, last: dt.date, used: set[str]) -> list[tuple[str, dt.date]]:
    span = (last - first).days
    out = []
    while len(out) < n:
        born = first + dt.timedelta(days=rng.randrange(span))
        number = insz.make(born, rng.randrange(1, 998), bis=rng.random() < 0.03)
        if number not in used:
            used.add(number)
            out.append((number, born))
    return out


def build_world(nis: str, *, children: int = 300, seed: int = 1) -> World:
    """A store with every case the match must get right: entitlements before and after the
    reference date, ended and ongoing, other supplements, beneficiary changes, future starts."""
    rng = random.Random(seed)
    used: set[str] = set()
    world = World()
    world.children = _unique_numbers(rng, children, dt.date(2001, 1, 1), dt.date(2025, 12, 31), used)
    world.beneficiaries = [n for n, _ in _unique_numbers(rng, children // 2, dt.date(1965, 1, 1), dt.date(1998, 1, 1), used)]
    for number, born in world.children:
        parent = rng.choice(world.beneficiaries)
        roll = rng.random()
        start = max(born, dt.date(2015, 1, 1)) + dt.timedelta(days=rng.randrange(0, 3000))
        if roll < 0.35:  # sociale toeslag, ongoing or ended
            end = None if rng.random() < 0.5 else start + dt.timedelta(days=rng.randrange(30, 1500))
            world.entitlements.append((number, parent, "sociale_toeslag", start, end))
        elif roll < 0.45:  # beneficiary changed over time
            switch = start + dt.timedelta(days=rng.randrange(100, 900))
            other = rng.choice(world.beneficiaries)
            world.entitlements.append((number, parent, "sociale_toeslag", start, switch - dt.timedelta(days=1)))
            world.entitlements.append((number, other, "sociale_toeslag", switch, None))
        elif roll < 0.55:  # ended before the reference date: not in the result
            world.entitlements.append((number, parent, "sociale_toeslag", dt.date(2016, 1, 1), dt.date(2019, 12, 31)))
        elif roll < 0.75:  # another supplement only
            world.entitlements.append((number, parent, rng.choice(["zorgtoeslag", "schooltoeslag"]), start, None))
        elif roll < 0.82:  # two periods with a gap between them: two result rows, the gap never bridged
            first_end = start + dt.timedelta(days=rng.randrange(30, 700))
            resumed = first_end + dt.timedelta(days=rng.randrange(2, 400))
            world.entitlements.append((number, parent, "sociale_toeslag", start, first_end))
            world.entitlements.append((number, parent, "sociale_toeslag", resumed, rng.choice([None, resumed + dt.timedelta(days=300)])))
        elif roll < 0.86:  # a split record, touching or overlapping: one continuous period
            split = start + dt.timedelta(days=rng.randrange(30, 700))
            world.entitlements.append((number, parent, "sociale_toeslag", start, split))
            world.entitlements.append((number, parent, "sociale_toeslag", split + dt.timedelta(days=rng.choice([1, -5])), None))
        # else: no entitlement at all
    with session_scope() as session:
        child_ids, parent_ids = {}, {}
        for number, born in world.children:
            row = Child(insz=number, birth_date=born, nis_code=nis)
            session.add(row)
            session.flush()
            child_ids[number] = row.id
        for number in world.beneficiaries:
            row = Beneficiary(insz=number)
            session.add(row)
            session.flush()
            parent_ids[number] = row.id
        for child, parent, supplement, start, end in world.entitlements:
            session.add(Entitlement(child_id=child_ids[child], beneficiary_id=parent_ids[parent], supplement=supplement,
                                    start_date=start, end_date=end))
    return world


def expected_pairs(world: World, requested: set[str], exchange_date: dt.date) -> list[tuple]:
    """What the result must hold, computed day by day without SQL and without the production rule:
    (child, beneficiary, start, end-or-None), one row per run of consecutive entitled days."""
    days: dict[tuple[str, str], set[dt.date]] = defaultdict(set)
    for child, parent, supplement, start, end in world.entitlements:
        if child not in requested or supplement != "sociale_toeslag":
            continue
        day = max(start, REFERENCE)
        last = exchange_date if end is None else min(end, exchange_date)
        while day <= last:
            days[(child, parent)].add(day)
            day += dt.timedelta(days=1)
    out = []
    for (child, parent), entitled in sorted(days.items()):
        ordered = sorted(entitled)
        run_start = previous = ordered[0]
        for day in ordered[1:] + [None]:
            if day is not None and day == previous + dt.timedelta(days=1):
                previous = day
                continue
            out.append((child, parent, run_start, None if previous == exchange_date else previous))
            if day is not None:
                run_start = previous = day
    return out


def request_workbook(numbers: list[str], *, extra_rows: list[object] = (), header: str = "INSZ") -> bytes:
    """A municipality's request: an INSZ column, a name column (ignored), extra rows appended."""
    buffer = io.BytesIO()
    book = xlsxwriter.Workbook(buffer, {"in_memory": True})
    sheet = book.add_worksheet("Kinderen")
    sheet.write_row(0, 0, [header, "Naam"])
    for r, value in enumerate([*numbers, *extra_rows], start=1):
        sheet.write_string(r, 0, str(value))
        sheet.write_string(r, 1, f"Kind {r}")
    book.close()
    return buffer.getvalue()


def encrypted_request(numbers: list[str], password: str, **kwargs) -> bytes:
    return encrypt_agile(request_workbook(numbers, **kwargs), password)
