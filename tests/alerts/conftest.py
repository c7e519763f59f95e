"""Loopback receivers for failure alerts: an HTTP webhook endpoint and an SMTP server (aiosmtpd).

Each fixture starts its server on 127.0.0.1 (a free port), exports the Airflow connection the
alert sender looks up (``AIRFLOW_CONN_ALERT_WEBHOOK`` / ``AIRFLOW_CONN_ALERT_SMTP``) for the
test, and collects what arrives.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

# The Method 1 set-up (signed protocol, SFTP account, key, store) of the exchange tests.
from tests.exchange.conftest import method1  # noqa: F401

ALERT_TO = ["oncall@agency.test", "dataeng@agency.test"]


@dataclass
class WebhookReceiver:
    port: int
    path: str = "/hooks/welfare-exchange"
    token: str = "test-webhook-token"
    received: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    status: int = 204

    def connection(self) -> dict:
        return {"conn_type": "http", "host": "127.0.0.1", "port": self.port, "schema": "http",
                "password": self.token, "extra": {"endpoint": self.path}}


@dataclass
class SmtpReceiver:
    port: int
    messages: list[email.message.EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)

    def connection(self) -> dict:
        return {"conn_type": "smtp", "host": "127.0.0.1", "port": self.port,
                "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "welfare-exchange@agency.test",
                          "timeout": 10, "retry_limit": 1, "to": ALERT_TO}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def webhook(monkeypatch):
    """A webhook endpoint on loopback; ``AIRFLOW_CONN_ALERT_WEBHOOK`` points at it."""
    receiver = WebhookReceiver(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.path == receiver.path:
                receiver.received.append(json.loads(body))
                receiver.headers.append(dict(self.headers))
                self.send_response(receiver.status)
            else:
                self.send_response(404)
            self.end_headers()

        def log_message(self, *args):  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AIRFLOW_CONN_ALERT_WEBHOOK", json.dumps(receiver.connection()))
    yield receiver
    server.shutdown()
    server.server_close()


@pytest.fixture
def smtp(monkeypatch):
    """An SMTP server on loopback (aiosmtpd); ``AIRFLOW_CONN_ALERT_SMTP`` points at it."""
    receiver = SmtpReceiver(port=_free_port())

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's naming)
            receiver.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            receiver.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=receiver.port)
    controller.start()
    monkeypatch.setenv("AIRFLOW_CONN_ALERT_SMTP", json.dumps(receiver.connection()))
    yield receiver
    controller.stop()
