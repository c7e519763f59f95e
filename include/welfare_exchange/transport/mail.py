"""Mail transport: poll the agency's mailbox over IMAP and send results over SMTP.

What the encrypted e-mail channel's tasks call; the S/MIME work itself is in
:mod:`welfare_exchange.transport.smime`. Connections (``imap_agency``, ``smtp_agency``,
``smime_agency`` by default) come from :mod:`welfare_exchange.connections` (filled by the Airflow
hooks) and are looked up when a task runs, never at import or parse time.

Guarantees the exchange relies on:

* **Fetching changes nothing.** :func:`fetch_unseen` reads with ``BODY.PEEK`` from a
  read-only ``EXAMINE``: a task that fails after fetching, or is cleared and re-run, sees the
  same messages again.
* **A message is known by its content.** Only after a request is safely staged does the task
  call :func:`move_message`, which moves it to a ``Processed`` folder (or ``Rejected``, for
  refused ones). A message is identified by the SHA-256 of its raw bytes, taken when it was
  downloaded: UIDs change with every move, and requests sent with the OpenSSL command line
  carry no Message-ID. The server's ``COPYUID`` answer says where it went (a hint, checked
  against the digest before anything is done to it). A re-run finds the message already
  moved, by its digest. A message stays "unseen" for this system while it is in the inbox,
  whatever a person's mail client did to its ``\\Seen`` flag.
* **Oversized messages are never downloaded**: their size is read first.
* **Sending once** is the ledger's job: the result message carries a Message-ID derived from
  the exchange (:func:`make_message_id`); the task asks the ledger before :func:`send` and
  records the Message-ID after it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email
import email.policy
import hashlib
import imaplib
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses

from welfare_exchange import connections
from welfare_exchange.errors import WelfareExchangeError
from welfare_exchange.settings import DEFAULTS
from welfare_exchange.transport import smime

log = logging.getLogger(__name__)

# The defaults of the settings (welfare_exchange.settings.DEFAULTS holds each once).
DEFAULT_IMAP_CONN_ID: str = DEFAULTS["WELFARE_EXCHANGE_IMAP_CONN_ID"]  # type: ignore[assignment]
DEFAULT_SMTP_CONN_ID: str = DEFAULTS["WELFARE_EXCHANGE_OUTREACH_SMTP_CONN"]  # type: ignore[assignment]
DEFAULT_SMIME_CONN_ID: str = DEFAULTS["WELFARE_EXCHANGE_SMIME_CONN_ID"]  # type: ignore[assignment]
PROCESSED_MAILBOX = "Processed"
REJECTED_MAILBOX = "Rejected"

_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


class MailTransportError(WelfareExchangeError):
    """The mail server refused or failed an operation (not the message's fault)."""

    code = "mail_transport"


@dataclass(frozen=True)
class ImapEndpoint:
    """IMAP server details, for tools and tests that have no Airflow connection.

    :param host: server name.
    :param port: port (143 plain / 993 TLS).
    :param user: login.
    :param password: password.
    :param use_ssl: implicit TLS (``IMAP4_SSL``); loopback test servers use ``False``.
    """

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    use_ssl: bool = True


@dataclass(frozen=True)
class RawMessage:
    """One message found in the mailbox, still encrypted.

    :param uid: its IMAP UID in the mailbox it was read from.
    :param uidvalidity: that mailbox's UIDVALIDITY (a UID means nothing without it).
    :param message_id: the Message-ID header, or ``None``.
    :param sender: bare From address, lower-cased (``""`` when missing or several).
    :param size: size in bytes as the server reports it.
    :param data: the whole message, or ``None`` when it is larger than ``max_bytes`` (not
        downloaded: refuse it with :func:`oversized_error`).
    """

    uid: int
    uidvalidity: int
    message_id: str | None
    sender: str
    size: int
    data: bytes | None = field(repr=False)

    @property
    def too_large(self) -> bool:
        return self.data is None


def make_message_id(exchange_key: str, domain: str) -> str:
    """The Message-ID of the e-mail that delivers ``exchange_key``'s result: always the same.

    Derived by hashing, so it reveals nothing about the exchange; base32 so it never contains
    a run of digits the INSZ log scanner could take for a number.

    :param exchange_key: the ledger's key of the exchange and what is sent (e.g.
        ``"44021/2026-03-01/result"``); include a version when a corrected result must go
        out as a new message.
    :param domain: the agency's mail domain (right of the ``@``).
    """
    if not exchange_key:
        raise ValueError("exchange_key must not be empty")
    if not _DOMAIN.match(domain):
        raise ValueError(f"not a mail domain: {domain!r}")
    digest = hashlib.sha256(b"welfare-exchange message-id\x00" + exchange_key.encode("utf-8")).digest()
    token = base64.b32encode(digest[:20]).decode("ascii").lower()
    return f"<we.{token}@{domain.lower()}>"


def oversized_error(message: RawMessage, max_bytes: int = smime.DEFAULT_MAX_MESSAGE_BYTES) -> smime.SmimeError:
    """The ``too_large`` error for a message :func:`fetch_unseen` did not download."""
    return smime.SmimeError(
        f"the message is {message.size / 1_048_576:.1f} MiB, more than the "
        f"{max_bytes / 1_048_576:.1f} MiB accepted: ask the municipality to split the request "
        "or to send it over SFTP",
        code="too_large",
    )


# ------------------------------------------------------------------------------------ IMAP


@contextlib.contextmanager
def _imap_client(
    imap_conn_id: str | None, endpoint: ImapEndpoint | None
) -> Iterator[imaplib.IMAP4]:
    """A logged-in IMAP client from the Airflow connection (via the imap provider) or ``endpoint``."""
    if endpoint is not None:
        cls = imaplib.IMAP4_SSL if endpoint.use_ssl else imaplib.IMAP4
        try:
            client = cls(endpoint.host, endpoint.port, timeout=60)
            client.login(endpoint.user, endpoint.password)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailTransportError(
                f"cannot log in to the IMAP server {endpoint.host}:{endpoint.port}: check the "
                f"server and credentials ({type(exc).__name__})"
            ) from exc
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()
        return

    # The hook reads host, port, login, password and the use_ssl / ssl_context extras from the
    # connection exactly as the Airflow UI documents them.
    conn_id = imap_conn_id or DEFAULT_IMAP_CONN_ID
    with contextlib.ExitStack() as stack:
        try:
            client = stack.enter_context(connections.hooks().imap(conn_id))
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailTransportError(
                f"cannot log in to the IMAP server of connection {conn_id!r}: check its host, port, "
                f"login, password and use_ssl extra ({type(exc).__name__})"
            ) from exc
        yield client


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check(status_data: tuple[str, list], action: str) -> list:
    status, data = status_data
    if status != "OK":
        detail = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")[:200]
        raise MailTransportError(f"the IMAP server refused to {action}: {detail}")
    return data


def _select(client: imaplib.IMAP4, mailbox: str, readonly: bool) -> int:
    """Open ``mailbox`` (EXAMINE when ``readonly``) and return its UIDVALIDITY."""
    _check(client.select(_quote(mailbox), readonly=readonly), f"open the mailbox {mailbox!r}")
    return _uidvalidity(client, mailbox)


def _uidvalidity(client: imaplib.IMAP4, mailbox: str) -> int:
    _, values = client.response("UIDVALIDITY")
    if values and values[0]:
        return int(values[0])
    data = _check(client.status(_quote(mailbox), "(UIDVALIDITY)"), "report UIDVALIDITY")
    match = re.search(rb"UIDVALIDITY (\d+)", data[0] or b"")
    return int(match.group(1)) if match else 0


def _fetch_parts(data: list) -> dict[int, dict[str, object]]:
    """Group an imaplib FETCH response by UID: sizes, header bytes and bodies."""
    result: dict[int, dict[str, object]] = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        head, payload = item[0], item[1]
        uid_match = re.search(rb"UID (\d+)", head)
        if not uid_match:
            continue
        entry = result.setdefault(int(uid_match.group(1)), {})
        size_match = re.search(rb"RFC822\.SIZE (\d+)", head)
        if size_match:
            entry["size"] = int(size_match.group(1))
        if b"HEADER.FIELDS" in head.upper():
            entry["header"] = payload
        elif b"BODY[]" in head.upper():
            entry["body"] = payload
    # A response item without a literal (the size alone) arrives as bytes, not a tuple.
    for item in data:
        if isinstance(item, bytes):
            uid_match = re.search(rb"UID (\d+)", item)
            size_match = re.search(rb"RFC822\.SIZE (\d+)", item)
            if uid_match and size_match:
                result.setdefault(int(uid_match.group(1)), {})["size"] = int(size_match.group(1))
    return result


def _sender_and_id(header_bytes: bytes | None) -> tuple[str, str | None]:
    header = email.message_from_bytes(header_bytes or b"", policy=email.policy.compat32)
    addresses = [a.lower() for _, a in getaddresses(header.get_all("From", [])) if a]
    message_id = (header.get("Message-ID") or "").strip() or None
    return (addresses[0] if len(addresses) == 1 else ""), message_id


def fetch_unseen(
    imap_conn_id: str | None = DEFAULT_IMAP_CONN_ID,
    *,
    endpoint: ImapEndpoint | None = None,
    mailbox: str = "INBOX",
    since: dt.date | None = None,
    max_bytes: int = smime.DEFAULT_MAX_MESSAGE_BYTES,
    limit: int = 50,
) -> list[RawMessage]:
    """The messages still waiting in ``mailbox``, oldest first, without changing anything.

    "Unseen" means not yet processed by this system, i.e. still in the inbox (see
    :func:`move_message`); the ``\\Seen`` flag is ignored because people may read the
    mailbox too.

    :param imap_conn_id: Airflow connection of type ``imap`` (host, port, login, password,
        extra ``{"use_ssl": false}`` for plain IMAP on loopback).
    :param endpoint: explicit server details instead of a connection.
    :param mailbox: the folder to read.
    :param since: only messages whose IMAP internal date is on or after this day.
    :param max_bytes: messages larger than this are listed with ``data=None``, not downloaded.
    :param limit: at most this many messages per call (the oldest first); the sensor polls
        again for the rest.
    :raises MailTransportError: the server cannot be reached or refuses.
    """
    with _imap_client(imap_conn_id, endpoint) as client:
        uidvalidity = _select(client, mailbox, readonly=True)
        criteria = ["UNDELETED"]
        if since is not None:
            criteria += ["SINCE", since.strftime("%d-%b-%Y")]
        data = _check(client.uid("SEARCH", None, *criteria), "search the mailbox")
        uids = sorted(int(u) for u in (data[0] or b"").split())[:limit]
        if not uids:
            return []
        uid_set = ",".join(str(u) for u in uids)
        meta = _fetch_parts(
            _check(
                client.uid("FETCH", uid_set, "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM MESSAGE-ID)])"),
                "read message headers",
            )
        )
        messages = []
        for uid in uids:
            info = meta.get(uid)
            if info is None:
                continue  # expunged by someone else in between
            size = int(info.get("size", 0))
            sender, message_id = _sender_and_id(info.get("header"))  # type: ignore[arg-type]
            body: bytes | None = None
            if size <= max_bytes:
                fetched = _fetch_parts(_check(client.uid("FETCH", str(uid), "(UID BODY.PEEK[])"), "download a message"))
                body = fetched.get(uid, {}).get("body")  # type: ignore[assignment]
                if body is None:
                    continue
            messages.append(
                RawMessage(
                    uid=uid, uidvalidity=uidvalidity, message_id=message_id, sender=sender, size=size, data=body
                )
            )
        log.info("found %d message(s) waiting in %s", len(messages), mailbox)
        return messages


def _create(client: imaplib.IMAP4, mailbox: str) -> None:
    status, data = client.create(_quote(mailbox))
    if status != "OK" and b"exist" not in b" ".join(d for d in data if isinstance(d, bytes)).lower():
        raise MailTransportError(f"the IMAP server refused to create the folder {mailbox!r}")


def _capabilities(client: imaplib.IMAP4) -> set[str]:
    """What the server offers once logged in (imaplib keeps only the greeting's list, which
    dovecot gives without MOVE and UIDPLUS)."""
    known = getattr(client, "_after_login_capabilities", None)
    if known is None:
        data = _check(client.capability(), "list its capabilities")
        known = {c.upper() for c in b" ".join(d for d in data if isinstance(d, bytes)).decode("ascii", "replace").split()}
        client._after_login_capabilities = known  # type: ignore[attr-defined]
    return known


def _expunge(client: imaplib.IMAP4, uid_set: str, action: str) -> None:
    """Flag ``uid_set`` deleted and expunge only them (UIDPLUS), never other messages when possible."""
    _check(client.uid("STORE", uid_set, "+FLAGS.SILENT", r"(\Deleted)"), "flag messages deleted")
    if "UIDPLUS" in _capabilities(client):
        _check(client.uid("EXPUNGE", uid_set), action)
    else:
        _check(client.expunge(), action)


_COPYUID = re.compile(rb"COPYUID (\d+) ([\d:,]+) ([\d:,]+)")


def _move_uids(client: imaplib.IMAP4, uid_set: str, target: str) -> tuple[int, int] | None:
    """Move ``uid_set`` of the selected mailbox to ``target``; ``(uidvalidity, uid)`` of the first
    message there when the server says (``COPYUID``, UIDPLUS), else ``None``."""
    client.response("COPYUID")  # forget an answer left over from an earlier command
    _check(client.uid("STORE", uid_set, "+FLAGS.SILENT", r"(\Seen)"), "flag messages as seen")
    if "MOVE" in _capabilities(client):
        _check(client.uid("MOVE", uid_set, _quote(target)), f"move messages to {target!r}")
        answers = client.response("COPYUID")[1]  # untagged before the expunges (RFC 6851)
        answers = [b"COPYUID " + a for a in answers if isinstance(a, bytes)]
    else:
        # Without MOVE a crash between copy and expunge leaves a copy in both folders: the next
        # try finds the moved copy by its digest and moves nothing again.
        answers = _check(client.uid("COPY", uid_set, _quote(target)), f"copy messages to {target!r}")
        _expunge(client, uid_set, "expunge moved messages")
    for answer in answers:
        match = _COPYUID.search(answer) if isinstance(answer, bytes) else None
        if match and match.group(3).replace(b",", b":").split(b":")[0].isdigit():
            return int(match.group(1)), int(match.group(3).replace(b",", b":").split(b":")[0])
    return None


# ----------------------------------------------------------------------- one message, by content

#: Bytes read per FETCH when a message is hashed: a message is never held whole.
DIGEST_CHUNK = 4 * 1024 * 1024


class MessageMissing(MailTransportError):
    """The message to move is in neither folder (moved or deleted by someone else)."""

    code = "message_missing"


@dataclass(frozen=True)
class MessageLocation:
    """Where one message is, and what it is.

    :param mailbox: the folder.
    :param uidvalidity: the folder's UIDVALIDITY.
    :param uid: the message's UID there.
    :param sha256: SHA-256 of the raw message (``BODY[]``): its identity in any folder.
    :param size: its size as the server reports it (``RFC822.SIZE``), which ``SEARCH`` uses.
    """

    mailbox: str
    uidvalidity: int
    uid: int
    sha256: str
    size: int

    def describe(self) -> str:
        """For a deletion certificate: where it was found and what matched."""
        return (f"message in {self.mailbox} (UIDVALIDITY {self.uidvalidity}, UID {self.uid}), "
                f"{self.size} bytes, SHA-256 {self.sha256}")


def _open(client: imaplib.IMAP4, mailbox: str, readonly: bool) -> int | None:
    """Select ``mailbox``; its UIDVALIDITY, or ``None`` when there is no such folder."""
    status, _ = client.select(_quote(mailbox), readonly=readonly)
    return _uidvalidity(client, mailbox) if status == "OK" else None


def message_digest(client: imaplib.IMAP4, uid: int) -> tuple[str, int] | None:
    """``(SHA-256 of the raw message, RFC822.SIZE)`` of a message of the selected mailbox, read in
    :data:`DIGEST_CHUNK` pieces (``BODY.PEEK``: nothing changes); ``None`` when it is not there."""
    meta = _fetch_parts(_check(client.uid("FETCH", str(uid), "(UID RFC822.SIZE)"), "read a message's size"))
    if "size" not in meta.get(uid, {}):
        return None
    digest, offset = hashlib.sha256(), 0
    while True:
        fetched = _fetch_parts(
            _check(client.uid("FETCH", str(uid), f"(UID BODY.PEEK[]<{offset}.{DIGEST_CHUNK}>)"), "read a message")
        )
        chunk = fetched.get(uid, {}).get("body") or b""
        digest.update(chunk)  # type: ignore[arg-type]
        offset += len(chunk)  # type: ignore[arg-type]
        if len(chunk) < DIGEST_CHUNK:  # type: ignore[arg-type]
            return digest.hexdigest(), int(meta[uid]["size"])  # type: ignore[call-overload]


def find_message(
    client: imaplib.IMAP4, mailbox: str, *, sha256: str | None, size: int | None = None,
    uidvalidity: int | None = None, uid: int | None = None, readonly: bool = True,
) -> MessageLocation | None:
    """The message of ``mailbox`` whose raw content has ``sha256``; it stays selected.

    The UID hint (valid only with the folder's current UIDVALIDITY) is tried first, then every
    message of that size. A UID alone never decides: UIDVALIDITY values are timestamps, and two
    folders made in the same second share one, so a UID of another folder can name a stranger's
    message here. Only with ``sha256=None`` (a message never downloaded) does the hint decide.
    """
    current = _open(client, mailbox, readonly)
    if current is None:
        return None
    candidates: list[int] = []
    if uid is not None and uidvalidity == current:
        candidates.append(int(uid))
    if sha256 is not None:
        criteria = ["UNDELETED"] + (["LARGER", str(size - 1), "SMALLER", str(size + 1)] if size else [])
        found = _check(client.uid("SEARCH", None, *criteria), "search the mailbox")
        candidates += [int(u) for u in (found[0] or b"").split() if int(u) not in candidates]
    for candidate in candidates:
        identity = message_digest(client, candidate)
        if identity is not None and sha256 in (None, identity[0]):
            return MessageLocation(mailbox, current, candidate, identity[0], identity[1])
    return None


def locate(imap_conn_id: str | None, mailbox: str, *, uidvalidity: int, uid: int) -> MessageLocation | None:
    """Where and what the message with this UID is (its digest taken on the server, in pieces);
    ``None`` when it is not there or the folder was renumbered."""
    with _imap_client(imap_conn_id, None) as client:
        return find_message(client, mailbox, sha256=None, uidvalidity=uidvalidity, uid=uid)


def move_message(
    imap_conn_id: str | None, *, mailbox: str, to: str, sha256: str | None, size: int | None = None,
    uidvalidity: int | None = None, uid: int | None = None, endpoint: ImapEndpoint | None = None,
) -> MessageLocation:
    """Move the one message whose content is ``sha256`` from ``mailbox`` to ``to``; where it is now.

    Idempotent: a message no longer in ``mailbox`` but found in ``to`` by its digest (an earlier
    try moved it) is returned where it is. The new UID comes from the server's ``COPYUID``
    answer, or, without UIDPLUS, from a search of ``to`` by digest.

    :raises MessageMissing: it is in neither folder.
    """
    with _imap_client(imap_conn_id, endpoint) as client:
        _create(client, to)
        found = find_message(client, mailbox, sha256=sha256, size=size, uidvalidity=uidvalidity, uid=uid,
                             readonly=False)
        if found is None:
            there = find_message(client, to, sha256=sha256, size=size) if sha256 is not None else None
            if there is not None:
                return there
            raise MessageMissing(
                f"the message to move is no longer in {mailbox!r} nor in {to!r} of the agency's mailbox "
                "(moved or deleted by a person?): look for it by its SHA-256 in the audit trail"
            )
        answer = _move_uids(client, str(found.uid), to)
        if answer is not None:
            moved = MessageLocation(to, answer[0], answer[1], found.sha256, found.size)
        else:
            moved = find_message(client, to, sha256=found.sha256, size=found.size)
            if moved is None:
                raise MailTransportError(f"the message moved to {to!r} cannot be found there: check the mailbox")
    log.info("moved a message from %s to %s (UID %s)", mailbox, to, moved.uid)
    return moved


def delete_found(client: imaplib.IMAP4, found: MessageLocation) -> None:
    """Expunge the message :func:`find_message` just found (its mailbox is still selected)."""
    _expunge(client, str(found.uid), "expunge the message")


# ------------------------------------------------------------------------------------ SMTP


def send(
    smtp_conn_id: str,
    message_bytes: bytes,
    *,
    sender: str,
    to: str | Sequence[str],
) -> str:
    """Hand a complete message (from :func:`smime.encrypt`) to the SMTP server.

    This does not decide whether to send: the caller asks the ledger first (keyed on the
    exchange and the Message-ID) and records the returned Message-ID after it succeeds.

    :param smtp_conn_id: Airflow connection of type ``smtp`` (the smtp provider's extras:
        ``disable_ssl``, ``disable_tls``, ``timeout``, ``retry_limit``, ``from_email``).
    :param message_bytes: the whole RFC 5322 message; it must carry a Message-ID.
    :param sender: the SMTP envelope sender (the agency's address).
    :param to: the recipient address(es).
    :returns: the message's Message-ID.
    :raises MailTransportError: no Message-ID, or the server refused a recipient.
    """
    headers = email.message_from_bytes(message_bytes.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
    message_id = (headers.get("Message-ID") or "").strip()
    if not message_id:
        raise MailTransportError(
            "the message has no Message-ID: build it with smime.encrypt(message_id=make_message_id(...)) "
            "so the ledger can recognise a second attempt"
        )
    recipients = [to] if isinstance(to, str) else list(to)

    # The hook handles TLS, STARTTLS, login and OAuth2 from the connection; the ready S/MIME
    # bytes go through the client it opened.
    with connections.hooks().smtp(smtp_conn_id) as client:
        try:
            refused = client.sendmail(sender, recipients, message_bytes)
        except Exception as exc:  # smtplib raises several unrelated classes
            raise MailTransportError(
                f"the SMTP server of connection {smtp_conn_id!r} refused the message "
                f"({type(exc).__name__}): check the connection and the recipient's domain; "
                "nothing was recorded as sent"
            ) from exc
    if refused:
        raise MailTransportError(
            f"the SMTP server refused {len(refused)} recipient(s): check the address registered "
            "in the protocol"
        )
    log.info("sent message %s", message_id)
    return message_id


# ----------------------------------------------------------------------------- identities


def load_agency_identity(conn_id: str = DEFAULT_SMIME_CONN_ID):
    """The agency's S/MIME certificate and private key from an Airflow connection.

    The connection (type ``generic``) holds the PEM texts in its extra as ``certificate``
    and ``private_key``; an encrypted key's passphrase is the connection's password.

    :param conn_id: the connection id.
    :returns: ``(certificate, private_key)``.
    """
    connection = connections.get(conn_id)
    extra = connection.extra
    if not extra.get("certificate") or not extra.get("private_key"):
        raise MailTransportError(
            f"connection {conn_id!r} must hold the agency's S/MIME 'certificate' and "
            "'private_key' (PEM) in its extra"
        )
    certificate = smime.load_certificate(extra["certificate"])
    key = smime.load_private_key(extra["private_key"], connection.password or None)
    return certificate, key
