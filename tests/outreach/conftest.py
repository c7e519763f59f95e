"""Method 2 set-up: a recording SMTP server on loopback, a signed protocol with an offer, a store.

The SMTP server is aiosmtpd, as in :mod:`welfare_exchange.devtools.mail_server`, with a handler
of its own: it refuses recipients at ``bounce.invalid`` for good (550), as a receiving server
does for an address that does not exist, so bounces are real SMTP refusals. No IMAP is needed.
"""

from __future__ import annotations

import copy
import datetime as dt
import email
import email.policy
import json
import logging
import threading
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from tests.outreach.builders import OFFER, Store, build_store
from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange, SideEffect
from welfare_exchange.devtools.mail_server import LOOPBACK, free_port
from welfare_exchange.orchestration.method2_dag import method2_dags
from welfare_exchange.protocols import create, registry, transition

SENDER = "groeipakket@agency.test"
LOGICAL_DATE = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.timezone.utc)
EXCHANGE_DATE = LOGICAL_DATE.date()


class _Recorder:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 (aiosmtpd hook)
        if address.lower().endswith("@bounce.invalid"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        with self.sink.lock:
            self.sink.messages.append((tuple(envelope.rcpt_tos), bytes(envelope.original_content or envelope.content)))
        return "250 Message accepted for delivery"


@dataclass(repr=False)
class SmtpSink:
    port: int = 0
    messages: list[tuple[tuple[str, ...], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def connection(self) -> dict:
        return {"conn_type": "smtp", "host": LOOPBACK, "port": self.port,
                "extra": {"disable_ssl": True, "disable_tls": True, "from_email": SENDER, "timeout": 30, "retry_limit": 1}}

    def count(self) -> int:
        """How many messages arrived (a number: assertions on it print no address)."""
        with self.lock:
            return len(self.messages)

    def recipients(self) -> list[str]:
        with self.lock:
            return [rcpt for rcpts, _ in self.messages for rcpt in rcpts]

    def parsed(self) -> list[email.message.EmailMessage]:
        with self.lock:
            return [email.message_from_bytes(data, policy=email.policy.default) for _, data in self.messages]


@pytest.fixture(scope="session")
def smtp_sink_server():
    # aiosmtpd logs every command at INFO, recipients included: no address may reach test output.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    sink = SmtpSink()
    for attempt in range(3):
        sink.port = free_port()
        controller = Controller(_Recorder(sink), hostname=LOOPBACK, port=sink.port)
        try:
            controller.start()
            break
        except (OSError, RuntimeError):
            if attempt == 2:
                raise
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def smtp_sink(smtp_sink_server, monkeypatch) -> SmtpSink:
    with smtp_sink_server.lock:
        smtp_sink_server.messages.clear()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_AGENCY", json.dumps(smtp_sink_server.connection()))
    return smtp_sink_server


@dataclass
class Method2:
    protocol_id: int
    store: Store
    municipality: object  # tests.fixtures.sftp.SftpMunicipality
    smtp: SmtpSink

    def dag(self):
        with session_scope() as session:
            registry.write_snapshot(session)
        [dag] = [d for d in method2_dags().values() if d.params["protocol_id"] == self.protocol_id]
        return dag

    def run(self, logical_date=LOGICAL_DATE):
        return self.dag().test(logical_date=logical_date)

    def exchanges(self) -> list[Exchange]:
        with session_scope() as session:
            return list(session.scalars(sa.select(Exchange).order_by(Exchange.id)))

    def audit_records(self) -> list[AuditRecord]:
        with session_scope() as session:
            return list(session.scalars(sa.select(AuditRecord).order_by(AuditRecord.id)))

    def outbox_rows(self) -> list[SideEffect]:
        with session_scope() as session:
            return list(session.scalars(sa.select(SideEffect).where(SideEffect.kind == "outreach_message")))

    def revoke(self) -> None:
        with session_scope() as session:
            transition(session, self.protocol_id, "revoke", actor=audit.Actor.current_user(), reason="test")


def make_protocol(nis: str, *, channel: str = "sftp", offer: dict | None = None) -> int:
    with session_scope() as session:
        protocol = create(
            session, nis_code=nis, municipality=f"Testgemeente {nis}", kind="method2", channel=channel,
            key_connection=f"key_{nis}", college_decision_ref="CB/2026/77", college_decision_date=dt.date(2026, 9, 1),
            dpo_advice_date=dt.date(2026, 9, 15), offer=copy.deepcopy(offer or OFFER), actor=audit.Actor.current_user(),
        )
        for action in ("submit", "advise", "sign"):
            transition(session, protocol.id, action, actor=audit.Actor.current_user(), on=dt.date(2026, 10, 1))
        return protocol.id


@pytest.fixture
def outreach_env(monkeypatch):
    for name, value in {
        "WELFARE_EXCHANGE_OUTREACH_SENDER": SENDER,
        "WELFARE_EXCHANGE_OUTREACH_RATE": "0",
        "WELFARE_EXCHANGE_OUTREACH_LETTERS_PER_PDF": "4",
        "WELFARE_EXCHANGE_POKE_INTERVAL_SECONDS": "1",
        "WELFARE_EXCHANGE_RETRY_DELAY_SECONDS": "1",
        "WELFARE_EXCHANGE_GATE_TIMEOUT_SECONDS": "20",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def method2(sqlite_db, sftp_municipality, smtp_sink, outreach_env) -> Method2:
    """A signed Method 2 protocol (SFTP channel for the report), a store, a recording SMTP server."""
    m = sftp_municipality
    protocol_id = make_protocol(m.nis)
    store = build_store(m.nis, families=40)
    return Method2(protocol_id=protocol_id, store=store, municipality=m, smtp=smtp_sink)
