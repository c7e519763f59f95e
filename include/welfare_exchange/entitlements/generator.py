"""Synthetic data generator: a Groeipakket-like entitlement store, deterministic by seed.

Nothing here is real. Numbers are checksum-valid INSZ numbers made up from a birth date and a
serial; e-mail addresses use the reserved ``example.org`` and ``.invalid`` domains; streets are
invented words. The shape follows the mission's figures:

* **Families.** Children come in families of 1–6 (mean ≈ 1.77, as 1.63 M children in 920 k
  families); siblings are born 1–5 years apart, all between 1999-01-01 and :data:`STORE_DATE`.
  The family's beneficiary (*begunstigde*, the parent who is paid) is an adult born 1960–2000,
  20–40 years older than the eldest child.
* **Domicile.** The family lives in a municipality drawn by
  :attr:`~welfare_exchange.municipalities.Municipality.weight` (Antwerpen gets
  ~9 %). The store has no domicile column for beneficiaries, so "a child domiciled in another
  municipality than its beneficiary" shows in two ways: ~4 % of children (15 % of those aged
  18+) live in another municipality than their siblings (co-parenting, foster care, a student
  room), and the postal address of beneficiaries without e-mail is sometimes elsewhere (5 %;
  half of the new beneficiaries after a separation).
* **Supplements.** Entitlements start no earlier than the Groeipakket (2019-01-01) and end at
  the latest the day before the child's 25th birthday. About 31 % of children have a *sociale
  toeslag* (the family is below the income threshold); periods start from 2019 on — before
  and after the reference date 2020-03-01 — and are ongoing (``end_date`` NULL) or ended.
  About 3 % have a *zorgtoeslag*; a *schooltoeslag* (per school year, from 1 September, for
  children of 3 and older) goes to 80 % of children with a sociale toeslag and 12 % of others.
* **Beneficiary changes.** In ~10 % of families with a sociale toeslag the beneficiary changes
  on a day D (a separation): the child's sociale toeslag ends with the first beneficiary the day
  before D and continues from D with a new one, who gets a number and a contact of their own.
* **History (bitemporal).** Each period is recorded some days after it starts (the decision's
  lag: 0–30 days; ~10 % *with retroactive effect*, 1–8 months later), ongoing at first; its end
  is recorded as a new version some days after the end (again ~10 % retroactively), closing
  the first. A beneficiary change is recorded at once for both periods. ~1 % of sociale
  toeslagen were first recorded with a wrong beneficiary and corrected weeks later; ~1 % of the
  other children had a sociale toeslag recorded by mistake and withdrawn. Recorded moments are
  nightly (01:00 UTC) and never after the store date.
* **Contact.** ~70 % of beneficiaries have an e-mail address; the others a postal address.
* **Numbers.** ~3 % of children have a BIS number (month + 40). Serials are allocated per birth
  date in generation order, so numbers never collide, also between children and beneficiaries
  born on the same day.

The same ``seed`` and ``children`` give the very same rows (ids included); a smaller store with
the same seed is a prefix of a larger one, except for the last family.

Loading: the rows stream in chunks (default 50,000 children) through
:func:`welfare_exchange.entitlements.store.replace_store` — raw ``executemany`` on SQLite,
``COPY`` on PostgreSQL — while a worker thread already generates the next chunk.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import queue
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

from welfare_exchange import audit, insz, municipalities
from welfare_exchange.entitlements.progress import Progress
from welfare_exchange.entitlements.store import Chunk, replace_store
from welfare_exchange.errors import InputError

log = logging.getLogger(__name__)

#: "Today" of the synthetic store: nothing is born, starts or ends after it. Fixed (not the
#: real date) so that a seed gives the same store whenever it is generated.
STORE_DATE = dt.date(2026, 10, 31)
#: The Groeipakket replaced the child benefit on 1 January 2019: no entitlement starts earlier.
GROEIPAKKET_START = dt.date(2019, 1, 1)
#: The reference date of Method 1 exchanges (sociale toeslag from 1 March 2020 on).
REFERENCE_DATE = dt.date(2020, 3, 1)

CHILD_BORN_FROM = dt.date(1999, 1, 1)
BENEFICIARY_BORN = (1960, 2000)

MAX_CHILDREN = 5_000_000  # serial capacity is ~998 per birth date; stay far below it
DEFAULT_CHUNK = 50_000

# Distribution parameters (see the module docstring).
FAMILY_SIZES = (1, 2, 3, 4, 5, 6)
FAMILY_SIZE_CUM = (0.50, 0.82, 0.94, 0.98, 0.995, 1.0)  # mean 1.765
SOCIALE_P = 0.31
CHANGE_P = 0.10
BIS_P = 0.03
ELSEWHERE_P = 0.04
ELSEWHERE_ADULT_P = 0.15
ADDRESS_ELSEWHERE_P = 0.05
EMAIL_P = 0.70
ZORG_P = 0.03
SCHOOL_P_SOCIALE = 0.80
SCHOOL_P_OTHER = 0.12
ONGOING_P = 0.60
LAG_DAYS = (0, 30)
RETRO_P = 0.10
RETRO_LAG_DAYS = (31, 240)
CORRECTED_BENEFICIARY_P = 0.01
WITHDRAWN_P = 0.01
CORRECTION_AFTER_DAYS = (15, 120)
#: Recorded moments are at this hour (UTC) of their day: the nightly import.
RECORDED_AT = " 01:00:00.000000"

#: Invented street-name parts: clearly synthetic, so an address never points at a real house.
_STREET_STEMS = (
    "Voorbeeld", "Proef", "Fictie", "Model", "Schets", "Ontwerp", "Verzin", "Papier", "Inkt",
    "Sjabloon", "Oefen", "Test", "Kladblok", "Droombeeld", "Bedenk", "Maquette",
)
_STREET_KINDS = ("straat", "laan", "dreef", "hof", "weg", "plein", "pad", "kouter")

_SOC, _ZORG, _SCHOOL = "sociale_toeslag", "zorgtoeslag", "schooltoeslag"


class _Generator:
    """Produces the store family by family; one random stream, so the order is the data."""

    def __init__(self, children: int, seed: int, chunk_size: int) -> None:
        self.total = children
        self.chunk_size = chunk_size
        self.rng = random.Random(seed)
        self.codes, self.cum_weights = municipalities.weights()
        self.total_weight = self.cum_weights[-1]
        self.municipality = {m.nis_code: m for m in municipalities.MUNICIPALITIES}
        self.serials: dict[int, int] = {}
        self.iso_cache: dict[int, str] = {}
        self.prefix_cache: dict[tuple[int, bool], tuple[str, bool]] = {}
        self.next_child = self.next_beneficiary = self.next_entitlement = 1
        self.number_day = 0
        self.stats = {
            "families": 0,
            "bis_children": 0,
            "children_elsewhere": 0,
            "sociale_toeslag_children": 0,
            "beneficiary_changes": 0,
            "beneficiaries_with_email": 0,
            "entitlement_versions": 0,
            "retroactive_versions": 0,
            "corrected_beneficiaries": 0,
            "withdrawn": 0,
            **{f"entitlements_{supplement}": 0 for supplement in (_SOC, _ZORG, _SCHOOL)},
        }
        self.store_end = STORE_DATE.toordinal()
        self.gp_start = GROEIPAKKET_START.toordinal()
        self.child_min = CHILD_BORN_FROM.toordinal()
        self.ben_min = dt.date(BENEFICIARY_BORN[0], 1, 1).toordinal()
        self.ben_max = dt.date(BENEFICIARY_BORN[1], 12, 31).toordinal()

    # ------------------------------------------------------------------ small helpers
    # ``random.randint`` and ``random.choices`` cost three Python calls per draw; these run
    # tens of millions of times, so they draw from ``random()`` directly (still one stream).

    def between(self, low: int, high: int) -> int:
        """A uniform integer in [low, high]."""
        return low + int(self.rng.random() * (high - low + 1))

    def weighted_municipality(self) -> str:
        return self.codes[bisect.bisect(self.cum_weights, self.rng.random() * self.total_weight)]

    def family_size(self) -> int:
        return FAMILY_SIZES[bisect.bisect(FAMILY_SIZE_CUM, self.rng.random())]

    def iso(self, ordinal: int) -> str:
        text = self.iso_cache.get(ordinal)
        if text is None:
            text = self.iso_cache[ordinal] = dt.date.fromordinal(ordinal).isoformat()
        return text

    def number(self, ordinal: int, bis: bool) -> str:
        """A fresh INSZ for someone born on ``ordinal`` (the next free serial of that day).

        Same result as :func:`welfare_exchange.insz.make`, inlined with a per-day cache
        because it runs millions of times. A full day (998 serials) moves to the next day
        (:attr:`number_day` is the day the number carries).
        """
        while True:
            key = -ordinal if bis else ordinal
            serial = self.serials.get(key, 0) + 1
            if serial <= 998:
                self.serials[key] = serial
                break
            ordinal += 1
        self.number_day = ordinal
        cached = self.prefix_cache.get((ordinal, bis))
        if cached is None:
            born = dt.date.fromordinal(ordinal)
            month = born.month + (40 if bis else 0)
            cached = self.prefix_cache[(ordinal, bis)] = (
                f"{born.year % 100:02d}{month:02d}{born.day:02d}",
                born.year >= 2000,
            )
        prefix, after_2000 = cached
        first_nine = f"{prefix}{serial:03d}"
        return first_nine + insz.check_digits(first_nine, after_2000)

    def other_municipality(self, home: str) -> str:
        while True:
            code = self.weighted_municipality()
            if code != home:
                return code

    def beneficiary(self, chunk: Chunk, born: int, home: str, elsewhere_p: float) -> int:
        """Add a beneficiary born on ``born`` (ordinal) to ``chunk``; returns its id."""
        rng = self.rng
        id_ = self.next_beneficiary
        self.next_beneficiary += 1
        number = self.number(born, False)
        if rng.random() < EMAIL_P:
            # Reserved domains only (RFC 2606): never deliverable, never a real person's.
            domain = "example.org" if id_ % 3 else "post.invalid"
            chunk.beneficiaries.append((id_, number, f"ouder{id_}@{domain}", None, None, None))
            self.stats["beneficiaries_with_email"] += 1
        else:
            where = self.other_municipality(home) if rng.random() < elsewhere_p else home
            m = self.municipality[where]
            street = f"{rng.choice(_STREET_STEMS)}{rng.choice(_STREET_KINDS)} {self.between(1, 250)}"
            chunk.beneficiaries.append((id_, number, None, street, m.postcode, m.name))
        return id_

    def period(self, start_min: int, end_max: int) -> tuple[int, int | None]:
        """A supplement period inside [start_min, end_max] (ordinals); end ``None`` = ongoing.

        Half start at the earliest possible day (the Groeipakket's start or the child's
        birth), half later. Ongoing ones are only possible for children not yet 25 on the
        store date; for older ones "ongoing" means "until the day before their 25th birthday".
        """
        rng = self.rng
        start = start_min if rng.random() < 0.5 else self.between(start_min, end_max)
        if rng.random() < ONGOING_P:
            end = None if end_max == self.store_end else end_max
        else:
            end = self.between(start, end_max)
        return start, end

    def recorded(self, day: int) -> str:
        """The recorded moment of ``day`` (ordinal), never after the store date."""
        return self.iso(min(day, self.store_end)) + RECORDED_AT

    def lag(self) -> int:
        """Days between a fact and its recording (sometimes long: a retroactive decision)."""
        if self.rng.random() < RETRO_P:
            return self.between(*RETRO_LAG_DAYS)
        return self.between(*LAG_DAYS)

    def version(self, chunk: Chunk, child: int, ben: int, supplement: str, start: int, end: int | None,
                recorded_from: int, recorded_to: int | None) -> None:
        chunk.entitlements.append((
            self.next_entitlement, child, ben, supplement, self.iso(start), None if end is None else self.iso(end),
            self.recorded(recorded_from), None if recorded_to is None else self.recorded(recorded_to),
        ))
        self.next_entitlement += 1
        self.stats["entitlement_versions"] += 1

    def entitlement(
        self, chunk: Chunk, child: int, ben: int, supplement: str, start: int, end: int | None,
        known: int | None = None, end_known: int | None = None,
    ) -> None:
        """A period and its history: recorded ``known`` (ordinal; default after a lag), ongoing,
        until its end is recorded ``end_known`` (default after another lag) as a new version."""
        known = min(start + self.lag() if known is None else known, self.store_end)
        self.stats["retroactive_versions"] += known - start > LAG_DAYS[1]
        if end is not None:
            end_known = min(max(end + self.lag() if end_known is None else end_known, known), self.store_end)
        if end is None or end_known == known:
            self.version(chunk, child, ben, supplement, start, end, known, None)
        else:
            self.version(chunk, child, ben, supplement, start, None, known, end_known)
            self.version(chunk, child, ben, supplement, start, end, end_known, None)
            self.stats["retroactive_versions"] += end_known - end > LAG_DAYS[1]
        self.stats[f"entitlements_{supplement}"] += 1

    def corrected(self, chunk: Chunk, child: int, ben: int, start: int, end: int | None, home: str, ben_born: int) -> bool:
        """A sociale toeslag first recorded with a wrong beneficiary, corrected later; False when
        there is no time left before the store date (then nothing was added)."""
        known = min(start + self.lag(), self.store_end)
        fixed = known + self.between(*CORRECTION_AFTER_DAYS)
        if fixed >= self.store_end or (end is not None and end + LAG_DAYS[1] <= fixed):
            return False
        wrong = self.beneficiary(chunk, min(max(ben_born + self.between(-1500, 1500), self.ben_min), self.ben_max), home, 0.5)
        self.version(chunk, child, wrong, _SOC, start, None, known, fixed)
        self.entitlement(chunk, child, ben, _SOC, start, end, known=fixed)
        self.stats["corrected_beneficiaries"] += 1
        return True

    def withdrawn(self, chunk: Chunk, child: int, ben: int, window_start: int, window_end: int) -> None:
        """A sociale toeslag recorded by mistake and withdrawn weeks later (its version closed, no successor)."""
        start = self.between(window_start, window_end)
        known = min(start + self.lag(), self.store_end)
        gone = known + self.between(*CORRECTION_AFTER_DAYS)
        if gone < self.store_end:
            self.version(chunk, child, ben, _SOC, start, None, known, gone)
            self.stats["withdrawn"] += 1

    # ------------------------------------------------------------------ one family

    def family(self, chunk: Chunk, budget: int) -> int:
        """Add one family (at most ``budget`` children) to ``chunk``; returns its number of children."""
        rng = self.rng
        size = min(self.family_size(), budget)
        home = self.weighted_municipality()
        gaps = [self.between(330, 1800) for _ in range(size - 1)]
        first = self.between(self.child_min, self.store_end - sum(gaps))
        births = [first]
        for gap in gaps:
            births.append(births[-1] + gap)

        eldest_year = dt.date.fromordinal(first).year
        ben_year = min(max(eldest_year - self.between(20, 40), BENEFICIARY_BORN[0]), BENEFICIARY_BORN[1])
        ben_born = dt.date(ben_year, 1, 1).toordinal() + self.between(0, 364)
        ben = self.beneficiary(chunk, ben_born, home, ADDRESS_ELSEWHERE_P)

        sociale = rng.random() < SOCIALE_P
        change_day = None
        new_ben = None
        if sociale and rng.random() < CHANGE_P:
            change_day = self.between(self.gp_start + 120, self.store_end - 30)

        self.stats["families"] += 1
        for born in births:
            bis = rng.random() < BIS_P
            child = self.next_child
            self.next_child += 1
            number = self.number(born, bis)
            born = self.number_day  # a day whose serials ran out gives the next day's number: keep them equal
            birthday = dt.date.fromordinal(born)
            try:
                turns_25 = birthday.replace(year=birthday.year + 25).toordinal()
            except ValueError:  # born on 29 February
                turns_25 = dt.date(birthday.year + 25, 3, 1).toordinal()
            adult = self.store_end - born >= 18 * 365
            nis = home
            if rng.random() < (ELSEWHERE_ADULT_P if adult else ELSEWHERE_P):
                nis = self.other_municipality(home)
                self.stats["children_elsewhere"] += 1
            chunk.children.append((child, number, self.iso(born), nis))
            self.stats["bis_children"] += bis

            window_start = max(born, self.gp_start)
            window_end = min(turns_25 - 1, self.store_end)

            if sociale:
                self.stats["sociale_toeslag_children"] += 1
                start, end = self.period(window_start, window_end)
                if change_day is not None and start < change_day and (end is None or end >= change_day):
                    if new_ben is None:
                        new_ben_born = min(max(ben_born + self.between(-1500, 1500), self.ben_min), self.ben_max)
                        new_ben = self.beneficiary(chunk, new_ben_born, home, 0.5)
                    # One decision: the first period's end and the second's start are recorded together.
                    changed = change_day + self.lag()
                    self.entitlement(chunk, child, ben, _SOC, start, change_day - 1, end_known=max(changed, start))
                    self.entitlement(chunk, child, new_ben, _SOC, change_day, end, known=changed)
                    self.stats["beneficiary_changes"] += 1
                elif not (rng.random() < CORRECTED_BENEFICIARY_P and self.corrected(chunk, child, ben, start, end, home, ben_born)):
                    self.entitlement(chunk, child, ben, _SOC, start, end)
            elif rng.random() < WITHDRAWN_P:
                self.withdrawn(chunk, child, ben, window_start, window_end)

            if rng.random() < ZORG_P:
                zorg_from = max(born + self.between(0, 1500), self.gp_start)
                if zorg_from <= window_end:
                    start, end = self.period(zorg_from, window_end)
                    self.entitlement(chunk, child, ben, _ZORG, start, end)

            if rng.random() < (SCHOOL_P_SOCIALE if sociale else SCHOOL_P_OTHER):
                self.school(chunk, child, ben, birthday.year, window_end)
        return size

    def school(self, chunk: Chunk, child: int, ben: int, birth_year: int, window_end: int) -> None:
        """A schooltoeslag from 1 September of a school year until 31 August of a later one (or ongoing)."""
        rng = self.rng
        last_day = dt.date.fromordinal(window_end)
        last_year = last_day.year if last_day >= dt.date(last_day.year, 9, 1) else last_day.year - 1
        first_year = max(2019, birth_year + 3)
        if first_year > last_year:
            return
        year = first_year if rng.random() < 0.5 else self.between(first_year, last_year)
        start = dt.date(year, 9, 1).toordinal()
        if rng.random() < ONGOING_P and window_end == self.store_end:
            end = None
        else:
            end = min(dt.date(self.between(year + 1, last_year + 1), 8, 31).toordinal(), window_end)
        self.entitlement(chunk, child, ben, _SCHOOL, start, end)

    # ------------------------------------------------------------------ the stream

    def chunks(self) -> Iterator[Chunk]:
        made = 0
        chunk = Chunk()
        while made < self.total:
            made += self.family(chunk, self.total - made)
            if len(chunk.children) >= self.chunk_size:
                yield chunk
                chunk = Chunk()
        if chunk.children:
            yield chunk


def _produce(gen: _Generator, out: queue.Queue, stop: threading.Event) -> None:
    """Worker thread: generate chunks ahead of the writer (the DB driver releases the GIL).

    Ends with ``None`` (done) or the exception that stopped it; gives up as soon as the writer
    sets ``stop``, so a failed load never leaves it blocked on a full queue.
    """

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    try:
        for chunk in gen.chunks():
            if not put(chunk):
                return
        put(None)
    except BaseException as exc:  # handed to the writer, which re-raises it
        put(exc)


def generate(
    children: int,
    seed: int,
    *,
    url: str | None = None,
    progress: bool | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    actor: audit.Actor | None = None,
) -> dict[str, Any]:
    """Replace the entitlement store with a synthetic one of ``children`` children.

    Deterministic: the same ``children`` and ``seed`` always give the same rows. The three
    tables are emptied and refilled in one transaction (the previous store survives a
    failure), and the generation is audited as ``entitlements.generated`` with its counts.

    :param children: number of children (1 .. 5,000,000).
    :param seed: seed of the random stream.
    :param url: database URL; default the configured project database.
    :param progress: show a progress bar on stderr; default only when stderr is a terminal.
    :param chunk_size: children per bulk-load chunk (memory stays proportional to it).
    :param actor: who generates (default the operator running the CLI).
    :returns: counts — children, families, beneficiaries, entitlements (per supplement too),
        sociale_toeslag_children, beneficiary_changes, bis_children, children_elsewhere,
        beneficiaries_with_email, seconds.
    """
    if not 1 <= children <= MAX_CHILDREN:
        raise InputError(f"--children must be between 1 and {MAX_CHILDREN:,}")
    if seed < 0:
        raise InputError("--seed must be 0 or a positive integer")
    started = time.monotonic()
    gen = _Generator(children, seed, chunk_size)
    chunks: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    made = 0
    worker = threading.Thread(target=_produce, args=(gen, chunks, stop), name="generate-chunks", daemon=True)
    bar = Progress("generating children", children, bar=progress, unit="children")
    try:
        with replace_store(url) as (loader, session):
            worker.start()
            while True:
                item = chunks.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                loader.write(item)
                made += len(item.children)
                bar.advance(len(item.children), made)
            result: dict[str, Any] = {
                "children": gen.next_child - 1,
                "beneficiaries": gen.next_beneficiary - 1,
                "entitlements": sum(gen.stats[f"entitlements_{s}"] for s in (_SOC, _ZORG, _SCHOOL)),
                **gen.stats,
                "seed": seed,
            }
            audit.record(
                session,
                "entitlements.generated",
                "success",
                actor=actor or audit.Actor.current_user(),
                data_categories=["child", "beneficiary", "entitlement"],
                counts=result,
                message="entitlement store replaced by synthetic data",
            )
    finally:
        stop.set()
        bar.close()
        if worker.is_alive():
            worker.join(timeout=5)
    result["seconds"] = round(time.monotonic() - started, 1)
    log.info("entitlement store generated: %s", ", ".join(f"{k}={v}" for k, v in result.items()))
    return result
