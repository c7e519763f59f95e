"""A signed referral agreement with families referred and their list delivered (as the delivery step does)."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from tests.referral.builders import RUN, SYSTEM, USER, Family, candidate_csv, family, password, referral_protocol
from tests.referral.builders import TODAY as IMPORT_DAY
from welfare_exchange import audit, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Referral
from welfare_exchange.municipalities import MUNICIPALITIES
from welfare_exchange.orchestration.referral_dag import feedback_dag_id, referral_dag_id, referral_dags
from welfare_exchange.protocols import get, registry
from welfare_exchange.referral import candidates, listing

SENT_AT = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.timezone.utc)


@dataclass
class Referred:
    protocol_id: int
    key: str
    families: list[Family]
    codes: list[str]  # in the order of ``families``
    list_exchange: int

    def protocol(self, session):
        return get(session, self.protocol_id)


def refer(families: list[Family], *, on: dt.date = RUN, sent_at: dt.datetime = SENT_AT, key: str | None = None,
          protocol_id: int | None = None) -> Referred:
    """Import the families, build the list and record its delivery; the referral ids per family."""
    key = key or password()
    with session_scope() as session:
        candidates.import_candidates(session, candidate_csv(families), today=IMPORT_DAY, actor=USER)
        protocol_id = protocol_id or referral_protocol(session).id
    with session_scope() as session:
        built = listing.build_referral_list(session, get(session, protocol_id), on, password=key, actor=SYSTEM)
    with session_scope() as session:
        ledger.begin_side_effect(session, listing.delivery_key(built.exchange_id), kind=listing.DELIVERY_KIND,
                                 exchange_id=built.exchange_id)
        ledger.complete_side_effect(session, listing.delivery_key(built.exchange_id))
        listing.mark_sent(session, built.exchange_id, at=sent_at, actor=SYSTEM)
    with session_scope() as session:
        by_ref = {bytes(r.family_ref): r.code for r in session.scalars(sa.select(Referral).where(Referral.exchange_id == built.exchange_id))}
    return Referred(protocol_id, key, families, [by_ref.get(audit.subject_key(f.child)) for f in families], built.exchange_id)


@pytest.fixture
def referred(project_db) -> Referred:
    """Twelve families referred on :data:`RUN` under one signed agreement."""
    return refer([family() for _ in range(12)])


# ------------------------------------------------------------------ the referral DAGs on real SFTP

TODAY = dt.datetime.now(dt.timezone.utc).date()
#: Logical dates: the list this morning, feedback the same day (an outcome may not predate the sending).
LIST_RUN = dt.datetime(TODAY.year, TODAY.month, TODAY.day, 6, 0, tzinfo=dt.timezone.utc)


@dataclass
class Agreement:
    protocol_id: int
    municipality: object  # tests.fixtures.sftp.SftpMunicipality
    password: str
    entry: dict

    def dags(self):
        with session_scope() as session:
            registry.write_snapshot(session)
        dags = referral_dags()
        return dags[referral_dag_id(self.entry)], dags.get(feedback_dag_id(self.entry))

    def run_list(self, when=LIST_RUN):
        return self.dags()[0].test(logical_date=when)

    def run_feedback(self, when=LIST_RUN + dt.timedelta(hours=3)):
        return self.dags()[1].test(logical_date=when)

    def outbox(self, prefix: str = "") -> dict[str, bytes]:
        return {k: v for k, v in self.municipality.read_outbox().items() if k.startswith(prefix)}

    def remote(self, folder: str) -> list[str]:
        return sorted(p.name for p in self.municipality.account.local_dir(folder).iterdir())

    def codes(self) -> dict[bytes, str]:
        with session_scope() as session:
            return {bytes(r.family_ref): r.code for r in session.scalars(sa.select(Referral))}

    def actions(self) -> list[str]:
        with session_scope() as session:
            return list(session.scalars(sa.select(AuditRecord.action).order_by(AuditRecord.id)))


def xcom_text(*dag_ids: str) -> str:
    """Every XCom value the runs of these DAGs left, as one text."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        values = session.scalars(sa.select(XComModel.value).where(XComModel.dag_id.in_(dag_ids))).all()
    assert values, "no XCom at all: the scan would prove nothing"
    return json.dumps(values, default=str)


def agreement_env(monkeypatch, tmp_path) -> str:
    """What a referral agreement's DAGs need in a test: a fresh key-connection password (returned),
    an agency outbox under ``tmp_path`` and fast sensor and retry timings."""
    password = secrets.token_urlsafe(12)
    monkeypatch.setenv("AIRFLOW_CONN_KEY_REFERRAL", json.dumps({"conn_type": "generic", "password": password}))
    monkeypatch.setenv("WELFARE_EXCHANGE_AGENCY_OUTBOX", str(tmp_path / "agency-outbox"))
    for name, value in {
        "WELFARE_EXCHANGE_SETTLE_SECONDS": "0.3", "WELFARE_EXCHANGE_POKE_INTERVAL_SECONDS": "1",
        "WELFARE_EXCHANGE_RETRY_DELAY_SECONDS": "1", "WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS": "3",
        "WELFARE_EXCHANGE_GATE_TIMEOUT_SECONDS": "20", "WELFARE_EXCHANGE_TASK_RETRIES": "0",
    }.items():
        monkeypatch.setenv(name, value)
    return password


def _free_flemish_nis(sftp_server) -> str:
    for code in sorted((m.nis_code for m in MUNICIPALITIES), reverse=True):
        if code not in sftp_server.accounts:
            return code
    raise AssertionError("no Flemish NIS code left for an SFTP account")


@pytest.fixture
def agreement(sqlite_db, sftp_server, sftp_municipality_factory, monkeypatch, tmp_path) -> Agreement:
    """A signed referral agreement (parent name and criteria only) over a real SFTP account."""
    municipality = sftp_municipality_factory(_free_flemish_nis(sftp_server))
    password = agreement_env(monkeypatch, tmp_path)
    with session_scope() as session:
        protocol = referral_protocol(
            session, nis_code=municipality.nis, municipality=f"Testgemeente {municipality.nis}",
            fields=["parent_name", "criteria"], channel_connection=municipality.conn_id,
        )
        entry = next(p for p in registry.snapshot(session) if p["id"] == protocol.id)
    return Agreement(protocol.id, municipality, password, entry)


def import_families(families: list[Family], today: dt.date = TODAY) -> None:
    with session_scope() as session:
        candidates.import_candidates(session, candidate_csv(families), today=today, actor=USER)


def elsewhere_nis(nis: str) -> str:
    return next(m.nis_code for m in MUNICIPALITIES if m.nis_code != nis)
