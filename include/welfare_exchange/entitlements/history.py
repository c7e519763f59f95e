"""The entitlement store over time: what the agency knew, and when.

Every entitlement row is a *version* with two kinds of time (see
:class:`~welfare_exchange.db.models.Entitlement`): its **valid period** (``start_date`` ..
``end_date``, when the child gave right) and its **recording** (``recorded_from`` .. ``recorded_to``,
when the store held it as true). An import never changes a version's content: it closes the
versions it supersedes or withdraws (sets ``recorded_to``) and adds new ones.

"What did the agency know at moment M" is :func:`known_at` (the SQL condition) and
:func:`as_known_on` (the rows): the versions recorded at or before M and not superseded by M.
Every reader of the store asks it through these — Method 1 and Method 2 as known when their
exchange opened, a structural feed as known at its interval's start and end — so any past
delivery can be explained by asking again with that moment (``subject-access`` does).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from welfare_exchange.db.models import Beneficiary, Child, Entitlement
from welfare_exchange.entitlements.periods import sql_text

UTC = dt.timezone.utc
BRUSSELS = ZoneInfo("Europe/Brussels")
#: SQL type of a recorded moment, for typed parameters of textual queries.
MOMENT = sa.DateTime(timezone=True)


def moment(value: dt.datetime | dt.date | str) -> dt.datetime:
    """A recorded moment as an aware UTC datetime (how the store keeps them).

    A naive datetime is taken as UTC (SQLite returns the stored moments so, or as that text in
    a textual query). A date means the end of that day in Brussels: "what was known on 12
    October" includes what was recorded that day.
    """
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return dt.datetime.combine(value + dt.timedelta(days=1), dt.time(), tzinfo=BRUSSELS).astimezone(UTC)


def _known(columns, at) -> sa.ColumnElement[bool]:
    return sa.and_(columns.recorded_from <= at, sa.or_(columns.recorded_to.is_(None), columns.recorded_to > at))


def known_at(at: dt.datetime | dt.date, table: type[Entitlement] | sa.FromClause = Entitlement) -> sa.ColumnElement[bool]:
    """SQL: the version was the store's knowledge at ``at`` (recorded by then, not yet superseded)."""
    return _known(table.c if isinstance(table, sa.FromClause) else table, moment(at))


def was_known(recorded_from: dt.datetime, recorded_to: dt.datetime | None, at: dt.datetime) -> bool:
    """:func:`known_at` for one version already read (aware UTC moments)."""
    return recorded_from <= at and (recorded_to is None or recorded_to > at)


def known_at_text(alias: str, param: str = "known_at") -> str:
    """:func:`known_at` as SQL text for a textual query over ``alias``, the moment bound as
    ``param`` (bind it with :data:`MOMENT` and a value from :func:`moment`)."""
    columns = sa.table(alias, sa.column("recorded_from", MOMENT), sa.column("recorded_to", MOMENT))
    return sql_text(_known(columns.c, sa.bindparam(param, type_=MOMENT)))


def current(table: type[Entitlement] | sa.FromClause = Entitlement) -> sa.ColumnElement[bool]:
    """SQL: the version is the store's present knowledge."""
    columns = table.c if isinstance(table, sa.FromClause) else table
    return columns.recorded_to.is_(None)


@dataclass(frozen=True)
class EntitlementVersion:
    """One version of an entitlement, with both of its times. Holds INSZ numbers: never log it."""

    id: int
    child_insz: str
    beneficiary_insz: str
    supplement: str
    start_date: dt.date
    end_date: dt.date | None
    recorded_from: dt.datetime
    recorded_to: dt.datetime | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_date", _date(self.start_date))
        object.__setattr__(self, "end_date", _date(self.end_date))
        object.__setattr__(self, "recorded_from", moment(self.recorded_from))
        if self.recorded_to is not None:
            object.__setattr__(self, "recorded_to", moment(self.recorded_to))

    def __repr__(self) -> str:  # a version in a traceback must not show whom it is about
        return f"EntitlementVersion(id={self.id}, supplement={self.supplement})"


def _date(value) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _versions(session: Session, condition: sa.ColumnElement[bool]) -> list[EntitlementVersion]:
    ben = aliased(Beneficiary)
    query = (
        sa.select(
            Entitlement.id, Child.insz, ben.insz, Entitlement.supplement, Entitlement.start_date, Entitlement.end_date,
            Entitlement.recorded_from, Entitlement.recorded_to,
        )
        .join(Child, Child.id == Entitlement.child_id)
        .join(ben, ben.id == Entitlement.beneficiary_id)
        .where(condition)
        .order_by(Child.insz, Entitlement.supplement, Entitlement.start_date, Entitlement.recorded_from, Entitlement.id)
    )
    return [EntitlementVersion(*row) for row in session.execute(query)]


def as_known_on(
    session: Session,
    at: dt.datetime | dt.date,
    *,
    children: Sequence[str] | None = None,
    beneficiaries: Sequence[str] | None = None,
    supplements: Sequence[str] | None = None,
) -> list[EntitlementVersion]:
    """What the agency knew at ``at`` (a moment, or a date: the end of that day) — the one query
    that explains any past delivery.

    :param children: only these children's entitlements (INSZ numbers); ``beneficiaries`` likewise.
        Both given: entitlements of either.
    :param supplements: only these supplements.
    """
    condition = known_at(at)
    people = []
    if children is not None:
        people.append(Entitlement.child_id.in_(sa.select(Child.id).where(Child.insz.in_(list(children)))))
    if beneficiaries is not None:
        people.append(Entitlement.beneficiary_id.in_(sa.select(Beneficiary.id).where(Beneficiary.insz.in_(list(beneficiaries)))))
    if people:
        condition = sa.and_(condition, sa.or_(*people))
    if supplements is not None:
        condition = sa.and_(condition, Entitlement.supplement.in_(list(supplements)))
    return _versions(session, condition)


def versions_of(session: Session, number: str) -> list[EntitlementVersion]:
    """Every version ever recorded about ``number`` — as the child or as the beneficiary."""
    return _versions(
        session,
        sa.or_(
            Entitlement.child_id.in_(sa.select(Child.id).where(Child.insz == number)),
            Entitlement.beneficiary_id.in_(sa.select(Beneficiary.id).where(Beneficiary.insz == number)),
        ),
    )


def history_start(session: Session) -> dt.datetime | None:
    """The store's first recorded moment (``None``: empty store): nothing is known before it."""
    first = session.scalar(sa.select(sa.func.min(Entitlement.recorded_from)))
    return None if first is None else moment(first)


def last_recorded(session: Session) -> dt.datetime | None:
    """The latest moment anything was recorded or superseded: a new import must come after it."""
    last = [session.scalar(sa.select(sa.func.max(column))) for column in (Entitlement.recorded_from, Entitlement.recorded_to)]
    known = [moment(v) for v in last if v is not None]
    return max(known) if known else None
