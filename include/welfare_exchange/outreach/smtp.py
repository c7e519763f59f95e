"""Send many messages through one SMTP session, and say exactly what became of each.

:func:`welfare_exchange.transport.mail.send` opens a connection per message and reports any
failure alike. A campaign needs more: it must know, for every message, whether the server

* **accepted** it (``sent``: the server answered 250 after the data),
* **refused it for good** (``bounced``: a 5xx to the recipient or the data — the address does
  not exist, the mailbox is full for good, the content was rejected),
* **did not get it** (``not_sent``: the connection failed, or a 4xx before the data was
  handed over — safe to try again later), or
* **may or may not have accepted it** (``uncertain``: the connection broke while the data
  was being handed over, before the server's answer).

The phases (``MAIL``, ``RCPT``, ``DATA``) are therefore driven one by one on the client the
smtp provider's :class:`SmtpHook` opened (it handles TLS, STARTTLS and login from the Airflow
connection). Nothing here logs or raises an e-mail address.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
from dataclasses import dataclass

from welfare_exchange import connections
from welfare_exchange.transport.mail import MailTransportError

log = logging.getLogger(__name__)

SENT, BOUNCED, NOT_SENT, UNCERTAIN = "sent", "bounced", "not_sent", "uncertain"


@dataclass(frozen=True)
class SendResult:
    """What became of one message: ``outcome`` (see the module), the SMTP ``code``, and why."""

    outcome: str
    code: int | None = None
    reason: str = ""


def _reply(code: int, phase: str, text: bytes | str | None = b"") -> SendResult:
    """Classify a refusal: 5xx is permanent (a bounce), anything else means try again later."""
    outcome = BOUNCED if 500 <= code < 600 else NOT_SENT
    # The server's text may quote the address: keep only the code and the phase.
    return SendResult(outcome, code, f"{phase} refused with {code}")


class SmtpSession:
    """One SMTP session for a batch of messages, reopened after a broken connection.

    :param smtp_conn_id: Airflow connection of type ``smtp`` (the provider's extras apply).
    """

    def __init__(self, smtp_conn_id: str) -> None:
        self.smtp_conn_id = smtp_conn_id
        self._hook = None
        self._client: smtplib.SMTP | None = None

    def __enter__(self) -> SmtpSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._hook is not None:
            with contextlib.suppress(Exception):
                self._hook.close()
        self._hook = self._client = None

    def _connect(self) -> smtplib.SMTP:
        if self._client is None:
            stack = contextlib.ExitStack()
            try:
                client = stack.enter_context(connections.hooks().smtp(self.smtp_conn_id))
            except RuntimeError as exc:  # a provider change: the hook opened no client
                stack.close()
                raise MailTransportError(str(exc)) from None
            self._hook, self._client = stack, client
        return self._client

    def send(self, message: bytes, *, sender: str, recipient: str) -> SendResult:
        """Hand one message to the server; never raises for the message's own fate."""
        try:
            client = self._connect()
        except MailTransportError as exc:  # a provider change: nothing was handed over either
            return SendResult(NOT_SENT, None, str(exc))
        except Exception as exc:  # refused, unreachable, TLS or login failed: nothing was handed over
            self.close()
            return SendResult(NOT_SENT, None, f"cannot connect to the SMTP server of {self.smtp_conn_id!r} ({type(exc).__name__})")
        try:
            client.ehlo_or_helo_if_needed()  # the low-level commands below do not greet by themselves
            code, _ = client.mail(sender)
            if code != 250:
                client.rset()
                return _reply(code, "MAIL FROM")
            code, _ = client.rcpt(recipient)
            if code not in (250, 251):
                client.rset()
                return _reply(code, "RCPT TO")
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            return SendResult(NOT_SENT, None, f"connection lost before the message was handed over ({type(exc).__name__})")
        try:
            code, _ = client.data(message)
        except smtplib.SMTPDataError as exc:  # the server answered, and said no
            with contextlib.suppress(Exception):
                client.rset()
            return _reply(exc.smtp_code, "DATA")
        except (smtplib.SMTPException, OSError) as exc:
            # The data may have reached the server before the connection broke: it may have
            # accepted the message. Only the recipient knows; the outbox will not send again.
            self.close()
            return SendResult(UNCERTAIN, None, f"connection lost while handing over the message ({type(exc).__name__})")
        if code != 250:
            return _reply(code, "DATA")
        return SendResult(SENT, code, "accepted")
