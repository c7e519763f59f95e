"""A Method 1 set-up for end-to-end tests: project DB, SFTP account, key, signed protocol, store."""

from __future__ import annotations

import datetime as dt
import io
import json
import secrets
from dataclasses import dataclass

import msoffcrypto
import pytest
import python_calamine
import sqlalchemy as sa

from tests.exchange.builders import World, build_world
from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange, SideEffect
from welfare_exchange.orchestration.dag_factory import method1_dags
from welfare_exchange.protocols import create, registry, transition

#: The run's logical date: every test decides the age window and the match on it, not on today.
LOGICAL_DATE = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.timezone.utc)
EXCHANGE_DATE = LOGICAL_DATE.date()


@dataclass
class Method1:
    protocol_id: int
    municipality: object  # tests.fixtures.sftp.SftpMunicipality
    password: str
    world: World

    def dag(self):
        """The protocol's DAG as the DAG file builds it from the registry snapshot.

        ``dag.test()`` re-parses the dags folder, so the snapshot (the test's own file) is
        written first, exactly as a protocol change through the CLI does.
        """
        with session_scope() as session:
            registry.write_snapshot(session)
        [dag] = [d for d in method1_dags().values() if "protocol_id" in d.params and d.params["protocol_id"] == self.protocol_id]
        return dag

    def run(self, logical_date=LOGICAL_DATE):
        return self.dag().test(logical_date=logical_date)

    def outbox(self) -> dict[str, bytes]:
        return self.municipality.read_outbox()

    def results(self) -> dict[str, bytes]:
        return {k: v for k, v in self.outbox().items() if k.endswith(".xlsx")}

    def open_result(self, data: bytes) -> dict[str, list[list]]:
        """Decrypt a delivered result as the municipality's DPO does, and read every sheet."""
        office = msoffcrypto.OfficeFile(io.BytesIO(data))
        office.load_key(password=self.password, verify_password=True)
        plain = io.BytesIO()
        office.decrypt(plain)
        book = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(plain.getvalue()))
        return {name: book.get_sheet_by_name(name).to_python() for name in book.sheet_names}

    def remote(self, folder: str) -> list[str]:
        return sorted(p.name for p in self.municipality.account.local_dir(folder).iterdir())

    def exchanges(self) -> list[Exchange]:
        with session_scope() as session:
            return list(session.scalars(sa.select(Exchange).order_by(Exchange.id)))

    def actions(self) -> list[tuple[str, str]]:
        with session_scope() as session:
            return [(r.action, r.outcome) for r in session.scalars(sa.select(AuditRecord).order_by(AuditRecord.id))]

    def side_effects(self, kind: str) -> list[SideEffect]:
        with session_scope() as session:
            return list(session.scalars(sa.select(SideEffect).where(SideEffect.kind == kind)))

    def revoke(self, reason: str = "test") -> None:
        with session_scope() as session:
            transition(session, self.protocol_id, "revoke", actor=audit.Actor.current_user(), reason=reason)


def _signed_protocol(monkeypatch, nis: str, **fields) -> tuple[int, str]:
    """Key connection with a fresh password, fast sensor timings, and a signed Method 1
    protocol; returns ``(protocol id, password)``."""
    password = secrets.token_urlsafe(12)
    key_conn = f"key_{nis}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{key_conn.upper()}", json.dumps({"conn_type": "generic", "password": password}))
    for name, value in {
        "WELFARE_EXCHANGE_SETTLE_SECONDS": "0.3",
        "WELFARE_EXCHANGE_POKE_INTERVAL_SECONDS": "1",
        "WELFARE_EXCHANGE_RETRY_DELAY_SECONDS": "1",
        "WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS": "20",
        "WELFARE_EXCHANGE_GATE_TIMEOUT_SECONDS": "20",
    }.items():
        monkeypatch.setenv(name, value)
    return sign_protocol(nis, key_conn, **fields), password


def sign_protocol(nis: str, key_connection: str, **fields) -> int:
    """A Method 1 protocol created, submitted, advised and signed (valid from 2026-10-01); its id."""
    user = audit.Actor.current_user()
    with session_scope() as session:
        protocol = create(
            session, nis_code=nis, kind="method1", key_connection=key_connection, college_decision_ref="CB/2026/42",
            college_decision_date=dt.date(2026, 9, 1), dpo_advice_date=dt.date(2026, 9, 15), actor=user, **fields,
        )
        for action in ("submit", "advise", "sign"):
            transition(session, protocol.id, action, actor=user, on=dt.date(2026, 10, 1))
        return protocol.id


@pytest.fixture
def method1(sqlite_db, sftp_municipality, monkeypatch) -> Method1:
    """A signed Method 1 protocol for a fresh municipality with its own SFTP account and key."""
    m = sftp_municipality
    protocol_id, password = _signed_protocol(monkeypatch, m.nis, municipality=f"Testgemeente {m.nis}", channel="sftp")
    world = build_world(m.nis, children=300, seed=int(m.nis))
    return Method1(protocol_id=protocol_id, municipality=m, password=password, world=world)


# ------------------------------------------------------------------ the encrypted e-mail channel


@dataclass
class MailMethod1(Method1):
    """A Method 1 protocol over S/MIME e-mail: the agency's mailbox and the municipality's (``gent``)."""

    servers: object = None  # welfare_exchange.devtools.mail_server.MailServers
    pki: object = None  # tests.fixtures.mail.SmimePki

    def mailbox(self, user: str, folder: str = "INBOX") -> list[bytes]:
        return self.servers.messages(user, folder)

    def outbox(self) -> dict[str, bytes]:
        """What reached the municipality's mailbox, by Message-ID."""
        import email

        return {email.message_from_bytes(m)["Message-ID"]: m for m in self.mailbox("gent")}


def mail_logical_date() -> dt.datetime:
    """Today, 09:00 UTC: the throw-away certificates are valid from yesterday, so the exchange
    date (the logical date) must fall inside their validity."""
    today = dt.datetime.now(dt.timezone.utc).date()
    return dt.datetime(today.year, today.month, today.day, 9, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def method1_mail(sqlite_db, mail_env, smime_pki, monkeypatch) -> MailMethod1:
    """A signed Method 1 protocol for Gent over e-mail: sender address and certificates pinned.

    Two certificates are registered, as after a renewal: the current one and one that ends
    within 30 days (which must give a warning, not a refusal).
    """
    from tests.fixtures.mail import GENT_ADDRESS

    nis = "44021"
    protocol_id, password = _signed_protocol(
        monkeypatch, nis, municipality="Gent", channel="smime", channel_connection="smtp_agency",
        sender_address=GENT_ADDRESS,
        sender_certificates=[smime_pki.gent.certificate_pem, smime_pki.expiring.certificate_pem],
    )
    world = build_world(nis, children=300, seed=4402)
    return MailMethod1(protocol_id=protocol_id, municipality=None, password=password, world=world, servers=mail_env, pki=smime_pki)
