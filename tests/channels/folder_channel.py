"""A third channel, for tests only: a local folder as the municipality's inbox and outbox.

The proof that a new channel is one module plus its registration: this file implements the
:class:`~welfare_exchange.channels.base.Channel` interface with nothing but the project's public
helpers (ledger, audit, staging, the exchange's common steps), and the ``folder_channel``
fixture registers it. The contract suite (``tests/channels/contract.py``) runs against it as
against SFTP and S/MIME; ``tests/channels/test_folder_channel.py`` carries a Method 1 exchange,
a structural feed and a retention deletion over it.

A protocol on this channel names a sub-folder of the channel's root as its
``channel_connection``: ``<root>/<connection>/{inbox,received,quarantine,outbox}``.
Retention items it records are ``where="folder"``, located as ``"<connection>:<relative path>"``.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from typing import Any

from welfare_exchange import audit, ledger
from welfare_exchange.channels.base import Channel, Deleter, Inbound, Sent
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Exchange
from welfare_exchange.channels.common import (
    REQUEST_CATEGORIES,
    RESULT_CATEGORIES,
    load_exchange,
    open_request_exchange,
    report_text,
    require_gate,
    result_file_name,
)
from welfare_exchange.protocols import get
from welfare_exchange.staging import Staging

INBOX, RECEIVED, QUARANTINE, OUTBOX = "inbox", "received", "quarantine", "outbox"


def _handle(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FolderChannel(Channel):
    name = "folder"
    places = ("folder",)
    refusal_hint = "It was moved to quarantine/ and a validation report was put in the outbox/ folder."

    def __init__(self, root: pathlib.Path) -> None:
        self.root = pathlib.Path(root)

    def folder(self, connection: str, sub: str = "") -> pathlib.Path:
        path = self.root / connection / sub
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _move(self, connection: str, source: str, to: str) -> str:
        """Move ``source`` (relative) into folder ``to``; the new relative path (already there: the same)."""
        target = f"{to}/{pathlib.PurePosixPath(source).name}"
        src, dst = self.root / connection / source, self.folder(connection, to) / pathlib.PurePosixPath(source).name
        if src.exists():
            os.replace(src, dst)
        return target

    # ------------------------------------------------------------------ arrival

    def find_request(self, protocol_id, *, actor=None, on=None, **_):
        with session_scope() as session:
            connection = get(session, protocol_id).channel_connection
        files = [p for p in self.folder(connection, INBOX).iterdir()
                 if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".part")]
        if not files:
            return None
        first = min(files, key=lambda p: (p.stat().st_mtime_ns, p.name))
        return {"name_sha256": _handle(first.name), "size": first.stat().st_size}

    # ------------------------------------------------------------------ other files in

    def _inbound(self, connection: str, relative: str) -> Inbound:
        data = (self.root / connection / relative).read_bytes()
        return Inbound(data=data, ref=relative, location=f"{connection}:{relative}", sha256=_sha256(data), size=len(data))

    def find_inbound(self, protocol, patterns, *, settle_seconds=2.0):
        import fnmatch

        files = [p for p in self.folder(protocol.channel_connection, INBOX).iterdir()
                 if p.is_file() and any(fnmatch.fnmatchcase(p.name.lower(), x.lower()) for x in patterns)]
        return _handle(min(files, key=lambda p: (p.stat().st_mtime_ns, p.name)).name) if files else None

    def take_inbound(self, protocol, handle, patterns, *, key, run):
        connection = protocol.channel_connection
        with ledger.side_effect(key, kind="inbound_received", exchange_id=None) as effect:
            if effect.pending:
                [name] = [p.name for p in (*self.folder(connection, INBOX).iterdir(), *self.folder(connection, RECEIVED).iterdir())
                          if _handle(p.name) == handle]
                effect.complete(detail={"remote": self._move(connection, f"{INBOX}/{name}", RECEIVED)})
        return self._inbound(connection, effect.detail["remote"])

    def quarantine_inbound(self, protocol, inbound, *, key):
        connection = protocol.channel_connection
        with ledger.side_effect(key, kind="inbound_quarantined", exchange_id=None) as effect:
            if effect.pending:
                effect.complete(detail={"remote": self._move(connection, inbound.ref, QUARANTINE)})
        return self._inbound(connection, effect.detail["remote"])

    # ------------------------------------------------------------------ Method 1

    def fetch_request(self, protocol_id, item, run):
        with session_scope() as session:
            protocol = get(session, protocol_id)
            taken = session.query(Exchange).filter_by(protocol_id=protocol_id, run_id=run.run_id).one_or_none()
            if taken is None or run.run_id is None:
                require_gate(protocol, run.exchange_date)
            connection = protocol.channel_connection
        if taken is not None and run.run_id is not None:
            return self._received(protocol_id, taken.id, taken.request_name, run)
        [path] = [p for p in self.folder(connection, INBOX).iterdir() if _handle(p.name) == item["name_sha256"]]
        data = path.read_bytes()
        digest = _sha256(data)
        with session_scope() as session:
            protocol = get(session, protocol_id)
            exchange, duplicate_of = open_request_exchange(
                session, protocol, digest=digest, name=path.name, size=len(data), run=run, source="request file"
            )
            if duplicate_of is None:
                Staging(protocol_id, exchange.id).write_request(data)
                audit.record(
                    session, "request.fetched", actor=run.actor, protocol=protocol, exchange_id=exchange.id,
                    data_categories=REQUEST_CATEGORIES, file_hashes={"request": digest}, counts={"bytes": len(data)},
                    message="request file fetched from the inbox folder into staging", fact_key=f"exchange:{exchange.id}:fetched",
                )
        if duplicate_of is not None:
            self._move(connection, f"{INBOX}/{path.name}", RECEIVED)
            return None
        return self._received(protocol_id, exchange.id, path.name, run)

    def _received(self, protocol_id: int, exchange_id: int, name: str, run) -> int:
        with session_scope() as session:
            exchange, protocol = load_exchange(session, exchange_id)
        with ledger.side_effect(f"exchange:{exchange_id}:received", kind="received", exchange_id=exchange_id) as effect:
            if effect.pending:
                target = self._move(protocol.channel_connection, f"{INBOX}/{name}", RECEIVED)
                effect.complete(sha256=exchange.request_sha256, detail={"remote": target})
        with session_scope() as session:
            exchange, protocol = load_exchange(session, exchange_id)
            deadline, rule = ledger.request_deadline(protocol, exchange.exchange_date)
            if not ledger.is_done(session, f"exchange:{exchange_id}:quarantined"):
                self.schedule_copy(session, protocol, exchange_id=exchange_id, kind="request_file",
                                   location=f"{protocol.channel_connection}:{effect.detail['remote']}", deadline=deadline,
                                   rule=rule, sha256=exchange.request_sha256, size=exchange.request_size)
            ledger.schedule_deletion(session, protocol_id=protocol.id, exchange_id=exchange_id, kind="staging", where="local",
                                     location=str(Staging(protocol.id, exchange_id).folder), deadline=deadline, rule=rule)
        return exchange_id

    def quarantine(self, exchange_id, err, run):
        with session_scope() as session:
            exchange, protocol = load_exchange(session, exchange_id)
            received = ledger.find_side_effect(session, f"exchange:{exchange_id}:received").detail["remote"]
        key = f"exchange:{exchange_id}:quarantined"
        with ledger.side_effect(key, kind="quarantined", exchange_id=exchange_id) as effect:
            if effect.pending:
                effect.complete(detail={"remote": self._move(protocol.channel_connection, received, QUARANTINE)})
        self.send_file(
            protocol, key=f"exchange:{exchange_id}:report", kind="report_delivered", exchange_id=exchange_id,
            name=f"validatierapport_exchange-{exchange_id}.txt", payload=report_text(protocol, exchange, err),
            subject="validation report", content_type="text/plain", actor=run.actor, attempt=str(run.run_id),
            today=run.exchange_date, sensitive=False,
        )
        with session_scope() as session:
            exchange, protocol = load_exchange(session, exchange_id)
            ledger.update_exchange(session, exchange, state="quarantined", failure_code=err.code)
            deadline, rule = ledger.request_deadline(protocol, exchange.exchange_date)
            conn = protocol.channel_connection
            if not ledger.move_copy(session, "request_file", f"{conn}:{received}", exchange_id=exchange_id,
                                    kind="quarantine", location=f"{conn}:{effect.detail['remote']}"):
                self.schedule_copy(session, protocol, exchange_id=exchange_id, kind="quarantine",
                                   location=f"{conn}:{effect.detail['remote']}", deadline=deadline, rule=rule,
                                   sha256=exchange.request_sha256, size=exchange.request_size)
            audit.record(
                session, "request.quarantined", "refused", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
                file_hashes={"request": exchange.request_sha256}, message=f"{err.code}: {err}", fact_key=key,
            )

    def deliver(self, exchange_id, run):
        with session_scope() as session:
            exchange, protocol = load_exchange(session, exchange_id)
            name = result_file_name(protocol, exchange)
        staged = Staging(protocol.id, exchange.id).path("result.xlsx")
        key = f"exchange:{exchange_id}:delivered"
        payload = b"" if ledger_done(key) else staged.read_bytes()
        sent = self.send_file(
            protocol, key=key, kind="delivered", exchange_id=exchange_id, name=name, payload=payload,
            subject="result", content_type="application/octet-stream", actor=run.actor, attempt=str(run.run_id),
            today=run.exchange_date,
        )
        if not sent.already_sent and sent.sha256 != exchange.result_sha256:
            raise RuntimeError("the delivered file's hash differs from the built result")
        with session_scope() as session:
            exchange, protocol = load_exchange(session, exchange_id)
            ledger.update_exchange(session, exchange, state="delivered")
            audit.record(
                session, "result.delivered", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
                data_categories=RESULT_CATEGORIES, file_hashes={"result": sent.sha256}, counts={"bytes": sent.size},
                message="encrypted result delivered to the outbox folder", fact_key=key,
            )
        return {"name": name, "sha256": sent.sha256, "already_delivered": sent.already_sent}

    def schedule_retention(self, session, protocol, exchange, result_deadline, request_deadline):
        sent = ledger.find_side_effect(session, f"exchange:{exchange.id}:delivered")
        if sent is not None and sent.detail:
            self.schedule_copy(
                session, protocol, exchange_id=exchange.id, kind="result_file", location=sent.detail["location"],
                deadline=result_deadline, rule=ledger.result_deadline(protocol, exchange.exchange_date)[1],
                sha256=sent.sha256, size=sent.detail["bytes"],
            )

    # ------------------------------------------------------------------ sending

    def send_file(self, protocol, *, key, kind, exchange_id, name, payload, subject, content_type, actor, attempt,
                  today, sensitive=True, reference=None) -> Sent:
        outbox = self.folder(protocol.channel_connection, OUTBOX)
        location = f"{protocol.channel_connection}:{OUTBOX}/{name}"
        with ledger.side_effect(key, kind=kind, exchange_id=exchange_id, target=f"{OUTBOX}/{name}") as effect:
            if effect.pending:
                part = outbox / f".{name}.part"
                part.write_bytes(payload)
                os.replace(part, outbox / name)
                effect.complete(sha256=_sha256(payload), detail={"bytes": len(payload), "location": location})
        return Sent(sha256=effect.sha256, size=effect.detail["bytes"], how="to the outbox folder",
                    location=effect.detail["location"], already_sent=effect.was_done, detail=effect.detail)

    def sent_location(self, protocol, name):
        return f"{protocol.channel_connection}:{OUTBOX}/{name}"

    # ------------------------------------------------------------------ retention

    def deleter(self, store: str, **_: Any) -> Deleter:
        def delete(item, before_delete) -> str | None:
            connection, _, relative = item.location.partition(":")
            path = self.root / connection / relative
            if item.sha256 is None or not path.is_file():
                return None
            data = path.read_bytes()
            if _sha256(data) != item.sha256 or (item.size is not None and len(data) != item.size):
                return None  # another file at that name: never deleted, never certified
            verified = f"{relative.split('/')[0]}/ file of {len(data)} bytes, SHA-256 {item.sha256[:16]}… matched"
            before_delete(verified)
            path.unlink()
            return verified

        return delete


def ledger_done(key: str) -> bool:
    with session_scope() as session:
        return ledger.is_done(session, key)

