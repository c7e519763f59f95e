"""A structural-feed set-up for tests: project DB, SFTP accounts, keys, signed protocols, a store.

The store holds, per municipality, one child for every kind of change, each in its own month
of 2026 (the store's "today" is 2026-10-31), all recorded on 2026-07-01 (so every feed sees
only what happens in its month), and the expected content of every feed is known without
re-implementing the detection:

=========  ====================================================================
August     child ``new``: a sociale toeslag starts 2026-08-10 (ongoing)
September  child ``ended``: its sociale toeslag (since 2024) ends 2026-09-15
October    child ``moved``: paid to a new beneficiary from 2026-10-05
never      child ``split``: two records, same beneficiary, 2026-08-31 | 2026-09-01;
           child ``care``: a zorgtoeslag starting in August (not a sociale toeslag)
=========  ====================================================================
"""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import secrets
from dataclasses import dataclass, field

import msoffcrypto
import pytest
import python_calamine
import sqlalchemy as sa

from welfare_exchange import audit, insz
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Beneficiary, Child, Entitlement, Exchange, SideEffect
from welfare_exchange.protocols import create, registry, transition

D = dt.date
#: When the agency recorded the store of :func:`build_store` (before every interval the tests feed).
RECORDED = dt.datetime(2026, 7, 1, 1, tzinfo=dt.timezone.utc)
#: dag.test(logical_date=X) runs the interval that ends at X (the last complete month before X).
MONTH_END = {
    "2026-08": dt.datetime(2026, 9, 1, tzinfo=dt.timezone.utc),
    "2026-09": dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc),
    "2026-10": dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
}


@dataclass
class FeedMunicipality:
    sftp: object  # tests.fixtures.sftp.SftpMunicipality
    protocol_id: int
    password: str | None
    numbers: dict[str, str] = field(default_factory=dict)  # role -> INSZ (children and beneficiaries)

    @property
    def nis(self) -> str:
        return self.sftp.nis

    def feeds(self) -> dict[str, bytes]:
        return {k: v for k, v in self.sftp.read_outbox().items() if k.endswith(".xlsx")}

    def open_feed(self, data: bytes) -> dict[str, list[list]]:
        """Decrypt a delivered feed as the municipality's DPO does, and read every sheet."""
        office = msoffcrypto.OfficeFile(io.BytesIO(data))
        office.load_key(password=self.password, verify_password=True)
        plain = io.BytesIO()
        office.decrypt(plain)
        book = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(plain.getvalue()))
        return {name: book.get_sheet_by_name(name).to_python() for name in book.sheet_names}

    def expected(self, month: str) -> list[tuple[str, str, str]]:
        """(change, child, beneficiary) rows the feed of ``month`` must hold."""
        n = self.numbers
        return {
            "2026-08": [("nieuw", n["new"], n["parent_new"])],
            "2026-09": [("beëindigd", n["ended"], n["parent_ended"])],
            "2026-10": [("begunstigde gewijzigd", n["moved"], n["parent_moved_2"])],
        }[month]


def _numbers(rng: random.Random, used: set[str], born_from: dt.date, count: int) -> list[str]:
    out = []
    while len(out) < count:
        number = insz.make(born_from + dt.timedelta(days=rng.randrange(3000)), rng.randrange(1, 998))
        if number not in used:
            used.add(number)
            out.append(number)
    return out


def build_store(nis: str, seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    used: set[str] = set()
    kids = dict(zip(("new", "ended", "moved", "split", "care"), _numbers(rng, used, D(2008, 1, 1), 5)))
    parents = dict(
        zip(("parent_new", "parent_ended", "parent_moved_1", "parent_moved_2", "parent_split"), _numbers(rng, used, D(1975, 1, 1), 5))
    )
    plan = [
        ("new", "parent_new", "sociale_toeslag", D(2026, 8, 10), None),
        ("ended", "parent_ended", "sociale_toeslag", D(2024, 1, 1), D(2026, 9, 15)),
        ("moved", "parent_moved_1", "sociale_toeslag", D(2023, 1, 1), D(2026, 10, 4)),
        ("moved", "parent_moved_2", "sociale_toeslag", D(2026, 10, 5), None),
        ("split", "parent_split", "sociale_toeslag", D(2022, 1, 1), D(2026, 8, 31)),
        ("split", "parent_split", "sociale_toeslag", D(2026, 9, 1), None),
        ("care", "parent_new", "zorgtoeslag", D(2026, 8, 3), None),
    ]
    with session_scope() as session:
        child_ids = {}
        for role, number in kids.items():
            row = Child(insz=number, birth_date=D(2010, 1, 1), nis_code=nis)
            session.add(row)
            session.flush()
            child_ids[role] = row.id
        parent_ids = {}
        for role, number in parents.items():
            row = Beneficiary(insz=number)
            session.add(row)
            session.flush()
            parent_ids[role] = row.id
        for child, parent, supplement, start, end in plan:
            session.add(Entitlement(child_id=child_ids[child], beneficiary_id=parent_ids[parent], supplement=supplement,
                                    start_date=start, end_date=end, recorded_from=RECORDED))
    return {**kids, **parents}


@dataclass
class FeedWorld:
    municipalities: list[FeedMunicipality]

    def dag(self):
        """The structural_feeds DAG as its file defines it (``dag.test()`` re-parses the folder)."""
        from tests.dagutil import load_dag_file

        with session_scope() as session:
            registry.write_snapshot(session)
        return load_dag_file("structural_feeds").structural_feeds_dag

    def run(self, month: str):
        return self.dag().test(logical_date=MONTH_END[month])

    def actions(self) -> list[tuple[str, str]]:
        with session_scope() as session:
            return [(r.action, r.outcome) for r in session.scalars(sa.select(AuditRecord).order_by(AuditRecord.id))]

    def deliveries(self) -> list[SideEffect]:
        with session_scope() as session:
            return list(session.scalars(sa.select(SideEffect).where(SideEffect.kind == "feed_delivered")))

    def exchanges(self) -> list[Exchange]:
        with session_scope() as session:
            return list(session.scalars(sa.select(Exchange).order_by(Exchange.id)))


def sign_structural(nis: str, key_conn: str, **fields) -> int:
    """A signed structural protocol (over SFTP unless ``fields`` says otherwise)."""
    actor = audit.Actor.current_user()
    fields = {"municipality": f"Testgemeente {nis}", "channel": "sftp", **fields}
    with session_scope() as session:
        protocol = create(
            session, nis_code=nis, kind="structural", key_connection=key_conn, college_decision_ref="CB/2026/7",
            college_decision_date=D(2026, 1, 10), dpo_advice_date=D(2026, 1, 20), valid_from=D(2026, 1, 1), actor=actor,
            allowed_fields=["child_insz", "beneficiary_insz", "period_start", "period_end"], **fields,
        )
        for action in ("submit", "advise", "sign"):
            transition(session, protocol.id, action, actor=actor, on=D(2026, 2, 1))
        return protocol.id


@pytest.fixture
def feed_env(monkeypatch):
    for name, value in {
        "WELFARE_EXCHANGE_TASK_RETRIES": "0",
        "WELFARE_EXCHANGE_RETRY_DELAY_SECONDS": "1",
        "WELFARE_EXCHANGE_POKE_INTERVAL_SECONDS": "1",
        "WELFARE_EXCHANGE_FEED_SNAPSHOT_POLICY": "ignore",
        "WELFARE_EXCHANGE_FEED_START_DATE": "2026-01-01",
        # dag.test() in Airflow 3.3.2 crashes on a succeeding run of a DAG with a Deadline Alert
        # (see welfare_exchange.feeds.config); the summarise task's deadline check is tested instead.
        "WELFARE_EXCHANGE_FEED_DEADLINE_ALERT": "false",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def feed_world(sqlite_db, sftp_municipality_factory, feed_env, monkeypatch):
    """Three municipalities with signed structural protocols; the third has no key connection."""

    def make(count: int = 3, *, missing_key: int | None = 2, store: bool = True, nis: list[str] | None = None) -> FeedWorld:
        out = []
        for i in range(count):
            m = sftp_municipality_factory(nis[i] if nis else None)
            key_conn = f"key_{m.nis}"
            password = None
            if i != missing_key:
                password = secrets.token_urlsafe(12)
                monkeypatch.setenv(f"AIRFLOW_CONN_{key_conn.upper()}", json.dumps({"conn_type": "generic", "password": password}))
            else:
                monkeypatch.delenv(f"AIRFLOW_CONN_{key_conn.upper()}", raising=False)
            protocol_id = sign_structural(m.nis, key_conn)
            numbers = build_store(m.nis, int(m.nis)) if store else {}
            out.append(FeedMunicipality(sftp=m, protocol_id=protocol_id, password=password, numbers=numbers))
        return FeedWorld(out)

    return make
