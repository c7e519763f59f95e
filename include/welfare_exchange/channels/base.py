"""The Channel interface: everything the agency does on a municipality's channel.

Method 1 (:mod:`welfare_exchange.exchange.steps`), Method 2 (:mod:`welfare_exchange.outreach.steps`),
the structural feeds (:mod:`welfare_exchange.feeds.steps`), the receipt of a request and the
retention run (:mod:`welfare_exchange.retention.runner`) call only these methods; none of them
asks which channel a protocol uses. A channel is one module with one subclass, registered by
name (:func:`welfare_exchange.channels.registry.register`); ``tests/channels/contract.py`` is
the contract every registered channel passes.

Idempotency is the channel's promise too: every side effect on the far side goes through the
ledger (:func:`welfare_exchange.ledger.side_effect`), so a method called twice acts once.
Nothing here imports Airflow: the sensors and triggers call :meth:`Channel.find_request`.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

#: ``delete(item, before_delete)``: locate the stored copy of a retention item, verify it is the
#: recorded one (SHA-256, size), delete it; returns what was verified, or ``None`` when no copy
#: with the recorded content was found (reported missing, never certified).
Deleter = Callable[[Any, Callable[[str], None]], "str | None"]


@dataclass(frozen=True)
class Sent:
    """What :meth:`Channel.send_file` did (or found done by an earlier try).

    ``location``: where the copy now lies on the channel, when the agency must delete it later
    (``None`` when the copy is the municipality's, e.g. in its own mailbox).
    """

    sha256: str
    size: int
    how: str
    location: str | None = None
    already_sent: bool = False
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class Inbound:
    """A file the municipality sent that is not a Method 1 request (a referral feedback file),
    taken by :meth:`Channel.take_inbound`.

    ``data``: the file itself (over e-mail: the attachment, S/MIME-decrypted and its signature
    checked; still the file password's encryption). ``ref``: where the channel keeps its copy now,
    in the channel's own terms (an SFTP path, a mailbox folder and digest), handed back to
    :meth:`Channel.quarantine_inbound`. ``location``, ``sha256``, ``size``: the kept copy, for its
    deletion deadline (:meth:`Channel.schedule_copy`).
    """

    data: bytes
    ref: str
    location: str
    sha256: str
    size: int


class Channel(abc.ABC):
    """One way files travel between the agency and a municipality.

    Class attributes a channel sets:

    * ``name`` — the value of ``Protocol.channel``;
    * ``places`` — the ``RetentionItem.where`` values of the copies it stores (the retention run
      hands those items to :meth:`deleter`);
    * ``sensor`` — which Airflow sensor waits for a request: ``"generic"`` (the default: a
      sensor that calls :meth:`find_request`), or a name the orchestration layer knows for a
      channel with its own, richer sensor (``"sftp_inbox"``, ``"mailbox"``);
    * ``refusal_hint`` — where an operator finds a refused request and what the municipality got;
    * ``sender_identity`` — a protocol on it must register the municipality's sender address and
      certificate (the channel ties requests to both);
    * ``unreachable`` — the errors meaning the store itself cannot be reached (the retention run
      stops that store's items and retries later).
    """

    name: ClassVar[str]
    places: ClassVar[tuple[str, ...]] = ()
    sensor: ClassVar[str] = "generic"
    refusal_hint: ClassVar[str] = ""
    unreachable: ClassVar[tuple[type[BaseException], ...]] = ()
    sender_identity: ClassVar[bool] = False

    # ------------------------------------------------------------------ arrival

    @abc.abstractmethod
    def find_request(self, protocol_id: int, *, actor: Any, on: dt.date) -> dict[str, Any] | None:
        """One look for a complete request of this protocol; its handle (no name, no personal data), or ``None``.

        Plain and Airflow-free: the arrival sensor and trigger call it. What must be answered
        on the way (a file that is no request) may be answered here, once (ledger).
        """

    def doc(self, entry: dict[str, Any]) -> dict[str, str]:
        """What the Method 1 DAG's documentation says of this channel (``how_sent``, ``wait``,
        ``fetch``, ``refuse``, ``deliver``, ``connections``)."""
        return {
            "how_sent": f"over channel `{self.name}`",
            "wait": "waits for a complete request",
            "fetch": "takes the request into staging (sealed), SHA-256, ledger entry; the same file again is a *duplicate*",
            "refuse": "a bad file is set aside with a report to the municipality",
            "deliver": "the ledger makes it happen once",
            "connections": f"Channel connection: `{entry.get('channel_connection')}` · key connection: "
            f"`{entry.get('key_connection')}` (its password is the file password).",
        }

    # ------------------------------------------------------------------ other files in (referral feedback)

    @abc.abstractmethod
    def find_inbound(self, protocol, patterns: tuple[str, ...], *, settle_seconds: float = 2.0) -> Any | None:
        """One look for a complete file of this protocol whose name matches ``patterns`` (case-insensitive
        globs); its handle (JSON, no name, no personal data), or ``None``. Plain: a sensor calls it."""

    @abc.abstractmethod
    def take_inbound(self, protocol, handle: Any, patterns: tuple[str, ...], *, key: str, run: Any) -> Inbound:
        """Take the file ``handle`` names out of the arrivals (once per ledger ``key``: a second call finds it
        where the first put it) and return it. A file the channel itself refuses (over e-mail: sender,
        certificate, signature, cipher) is set aside and reported like a refused request, and raises."""

    @abc.abstractmethod
    def quarantine_inbound(self, protocol, inbound: Inbound, *, key: str) -> Inbound:
        """Set a taken file the caller refused aside (once per ``key``); where its copy is now."""

    # ------------------------------------------------------------------ Method 1

    @abc.abstractmethod
    def fetch_request(self, protocol_id: int, item: dict[str, Any], run: Any) -> int | None:
        """Take the request ``item`` into staging (sealed) and open its exchange (once).

        Returns the exchange id, or ``None`` for a duplicate of a request already processed.
        """

    @abc.abstractmethod
    def quarantine(self, exchange_id: int, err: Any, run: Any) -> None:
        """Set the refused request aside, send the municipality a validation report, record both (once each)."""

    @abc.abstractmethod
    def deliver(self, exchange_id: int, run: Any) -> dict[str, Any]:
        """Deliver the exchange's built result — exactly once (a second call sends nothing)."""

    def confirm_delivery(self, exchange_id: int, run: Any) -> bool:
        """Whether the result is delivered (a channel that can look at the far side confirms a delivery
        begun but not recorded)."""
        from welfare_exchange import ledger
        from welfare_exchange.db import session_scope

        with session_scope() as session:
            return ledger.is_done(session, f"exchange:{exchange_id}:delivered")

    @abc.abstractmethod
    def schedule_retention(self, session, protocol, exchange, result_deadline: dt.date, request_deadline: dt.date) -> None:
        """Record the deletion deadlines of what this exchange left on the channel."""

    # ------------------------------------------------------------------ sending

    @abc.abstractmethod
    def send_file(
        self, protocol, *, key: str, kind: str, exchange_id: int | None, name: str, payload: bytes,
        subject: str, content_type: str, actor: Any, attempt: str, today: dt.date, sensitive: bool = True,
        reference: str | None = None,
    ) -> Sent:
        """Send ``payload`` to the municipality as file ``name`` — once per ledger ``key``.

        A second call with the same key sends nothing and returns what the first did. ``actor``
        and ``attempt`` (the try, e.g. ``"<run id>:<try>"``) name who sends in what the channel
        audits on the way (a send repeated after an interrupted try).
        ``sensitive=False`` marks a report without personal data (a channel may then send it
        even where it could not encrypt it). ``reference``: a stable name of what is sent, for
        a channel that derives an identity from it (a Message-ID); default the key.
        """

    def sent_location(self, protocol, name: str) -> str | None:
        """Where a file :meth:`send_file` sent as ``name`` lies on the channel, when the agency must
        delete it later (``None`` when the copy is the municipality's)."""
        del protocol, name

    # ------------------------------------------------------------------ retention

    def schedule_copy(
        self, session, protocol, *, exchange_id: int | None, kind: str, location: str, deadline: dt.date, rule: str,
        sha256: str | None = None, size: int | None = None,
    ):
        """Record (idempotently) that the copy this channel stored at ``location`` is deleted on ``deadline``."""
        from welfare_exchange import ledger

        return ledger.schedule_deletion(
            session, protocol_id=protocol.id, exchange_id=exchange_id, kind=kind, where=self.places[0],
            location=location, deadline=deadline, rule=rule, sha256=sha256, size=size,
        )

    def shown_location(self, location: str) -> str:
        """A stored copy's location as certificates and logs show it (never a name a municipality chose)."""
        from welfare_exchange import untrusted

        return untrusted.shown_path(location)

    def store_of(self, location: str) -> str:
        """The store (account, mailbox) a location lies in: the retention run deletes one store's items together."""
        return location.partition(":")[0]

    @abc.abstractmethod
    def deleter(self, store: str, **options: Any) -> Deleter:
        """A function that locates, verifies and deletes the stored copies of one store (see :data:`Deleter`)."""
