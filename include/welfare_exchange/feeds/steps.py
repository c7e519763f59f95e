"""The steps of a structural feed run, each a plain function the DAG's tasks call.

1. :func:`select_municipalities` — the structural protocols open for the interval, read from
   the registry when the run runs (never at parse time);
2. :func:`detect_changes` — one exchange per (protocol, interval) in the ledger, keyed on the
   interval; the changes of every municipality in one set query, staged encrypted;
3. :func:`deliver_feed` — per municipality (a mapped task): the gate once more, the workbook
   built and encrypted once, delivered once through the protocol's channel, retention recorded;
4. :func:`summarise` — counts per outcome, the deadline check, and a failure when any
   municipality is left undelivered.

Idempotent like Method 1: a feed's exchange is keyed on sha256("structural:<protocol>:<interval>")
so a re-run or back-fill of a month is the same exchange; its file is built once and the staged
(encrypted) file reused, so it is delivered with the same bytes; the ledger's side effect makes
the upload happen once; audit facts carry a ``fact_key``. Nothing here logs, returns or raises
an INSZ.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Any

import sqlalchemy as sa

from welfare_exchange import audit, ledger, xlsx
from welfare_exchange.channels.registry import channel_for
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Exchange, Protocol
from welfare_exchange.errors import ProtocolError
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.exchange.steps import key_password
from welfare_exchange.feeds import changes as changes_
from welfare_exchange.feeds import deadline, workbook
from welfare_exchange.feeds.gate import KIND, gate, open_protocols
from welfare_exchange.feeds.interval import FeedInterval
from welfare_exchange.intake import encrypt_agile
from welfare_exchange.protocols import get
from welfare_exchange.staging import Staging

#: The built feed in staging (encrypted with the protocol's key), what every re-run re-sends.
FEED_FILE = "feed.xlsx"

log = logging.getLogger(__name__)

OUTBOX = "outbox"
FEED_CATEGORIES = ["wijziging", "INSZ kind", "INSZ begunstigde", "recht op sociale toeslag", "periode"]


class FeedChannelUnsupported(ProtocolError):
    """The protocol's channel cannot carry structural feeds (yet)."""


def _label(protocol: Protocol) -> str:
    return f"{protocol.nis_code} {protocol.municipality}"


# ------------------------------------------------------------------------- 1. select


def select_municipalities(interval: FeedInterval, run: RunInfo) -> list[dict[str, Any]]:
    """The municipalities due a feed for ``interval``: ``[{protocol_id, nis_code, municipality, channel}]``."""
    with session_scope() as session:
        chosen = open_protocols(session, interval)
        waiting = session.scalar(
            sa.select(sa.func.count()).select_from(Protocol).where(Protocol.kind == KIND, Protocol.status != "signed")
        )
        feeds = [
            {"protocol_id": p.id, "nis_code": p.nis_code, "municipality": p.municipality, "channel": p.channel, "label": _label(p)}
            for p in chosen
        ]
        selection = hashlib.sha256(",".join(str(f["protocol_id"]) for f in feeds).encode()).hexdigest()[:16]
        audit.record(
            session, "feed.selected", actor=run.actor,
            counts={"municipalities": len(feeds), "structural_protocols_not_signed": waiting or 0},
            message=f"structural feed {interval}: {len(feeds)} municipalities with a signed structural protocol valid on "
            f"{interval.last_day.isoformat()}",
            fact_key=f"feed:{interval}:selected:{selection}",
        )
    log.info("structural feed %s: %d municipalities selected", interval, len(feeds))
    return feeds


# ------------------------------------------------------------------------- 2. detect


def detect_changes(feeds: list[dict[str, Any]], interval: FeedInterval, run: RunInfo) -> list[dict[str, Any]]:
    """Open each feed's exchange and stage its changes (encrypted); returns the feeds with ``exchange_id``.

    A feed already built (a re-run, a back-fill of a month done before) keeps its staged file:
    its changes are not detected again, so its delivery cannot change.
    """
    out, todo = [], {}
    with session_scope() as session:
        for feed in feeds:
            protocol = get(session, feed["protocol_id"])
            exchange, _ = ledger.open_exchange(
                session, protocol, request_sha256=interval.exchange_key(protocol.id),
                request_name=f"structurele feed {interval}", request_size=None,
                dag_id=run.dag_id, run_id=run.run_id, exchange_date=interval.end,
            )
            out.append({**feed, "exchange_id": exchange.id, "interval": str(interval)})
            if exchange.result_sha256 is None:
                todo[exchange.id] = (protocol.id, protocol.nis_code, tuple(protocol.supplements))
    by_supplements: dict[tuple[str, ...], set[str]] = {}
    for _, nis, supplements in todo.values():
        by_supplements.setdefault(supplements, set()).add(nis)
    detected: dict[tuple[str, ...], dict[str, list]] = {}
    with session_scope() as session:
        for supplements, codes in by_supplements.items():
            detected[supplements] = changes_.detect(session, codes, interval, supplements)
    total = 0
    for exchange_id, (protocol_id, nis, supplements) in todo.items():
        rows = detected[supplements][nis]
        total += len(rows)
        Staging(protocol_id, exchange_id).write_encrypted("changes", changes_.serialise(rows))
        with session_scope() as session:
            exchange = ledger.get_exchange(session, exchange_id)
            tally = changes_.counts(rows)
            ledger.update_exchange(session, exchange, state="matched", counts=tally)
            audit.record(
                session, "feed.changes_detected", actor=run.actor, protocol=get(session, protocol_id),
                exchange_id=exchange_id, data_categories=FEED_CATEGORIES, counts=tally,
                subjects={r.child_insz for r in rows} | {r.beneficiary_insz for r in rows},
                message=f"changes in {', '.join(supplements)} during {interval} read from the entitlement store",
                fact_key=f"exchange:{exchange_id}:changes_detected",
            )
    log.info("structural feed %s: changes detected for %d feeds (%d rows), %d already built", interval, len(todo), total,
             len(out) - len(todo))
    return out


# ------------------------------------------------------------------------- 3. deliver


def result_deadline(protocol: Protocol, interval: FeedInterval) -> dt.date:
    """The day the municipality (and the agency's staging) must have deleted the feed file."""
    return ledger.result_deadline(protocol, interval.end, what="feed", after="the interval ended")[0]


def build_feed(exchange_id: int, interval: FeedInterval, run: RunInfo) -> str:
    """Build the workbook and encrypt it with the protocol's key — once; returns its SHA-256.

    The encryption's random salts make every build's bytes different, so the first build is
    kept in staging and reused by every re-run: a re-run delivers the very same bytes.
    """
    with session_scope() as session:
        exchange = ledger.get_exchange(session, exchange_id)
        protocol = get(session, exchange.protocol_id)
    staging = Staging(protocol.id, exchange.id)
    staged = staging.sha256(FEED_FILE)
    if exchange.result_sha256 and staged == exchange.result_sha256:
        return exchange.result_sha256
    if exchange.result_sha256 and staged is not None:
        raise RuntimeError(
            f"feed exchange {exchange_id}: the staged feed file differs from the one recorded in the ledger; "
            "it is not delivered. Runbook: 'A staged file was changed'."
        )
    rows = changes_.deserialise(staging.read_encrypted("changes"))
    password = key_password(protocol)
    plain = workbook.build_workbook(protocol, interval, rows, result_deadline(protocol, interval))
    built = encrypt_agile(plain, password)
    del plain
    staging.write_file(FEED_FILE, built)
    digest = _sha256(built)
    with session_scope() as session:
        exchange = ledger.get_exchange(session, exchange_id)
        ledger.update_exchange(session, exchange, state="built", result_sha256=digest)
        audit.record(
            session, "feed.built", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            data_categories=FEED_CATEGORIES, file_hashes={"feed": digest}, counts={"rows": len(rows)},
            message="feed workbook built and encrypted with the protocol's key (AES-256)",
            fact_key=f"exchange:{exchange_id}:built",
        )
    return digest


def deliver_feed(feed: dict[str, Any], run: RunInfo) -> dict[str, Any]:
    """Deliver one municipality's feed: gate, build once, upload once, record retention.

    :param feed: one item of :func:`detect_changes`' output.
    :returns: ``{"protocol_id", "nis_code", "name", "sha256", "rows", "already_delivered"}``.
    """
    interval = FeedInterval.parse(feed["interval"])
    exchange_id = feed["exchange_id"]
    key = f"feed:{exchange_id}:delivered"
    with session_scope() as session:
        exchange = ledger.get_exchange(session, exchange_id)
        protocol = get(session, exchange.protocol_id)
        # The ledger first: a feed already delivered is not the gate's to block (a protocol
        # revoked afterwards neither fails it nor adds a "blocked" fact).
        decision = None if ledger.is_done(session, key) else gate(protocol, interval)
        if decision is not None and not decision.is_open:
            ledger.update_exchange(session, exchange, state="failed", failure_code="protocol_closed")
            audit.record(
                session, "feed.delivery_blocked", "refused", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
                message=decision.reason, fact_key=f"exchange:{exchange_id}:blocked",
            )
    if decision is not None and not decision.is_open:
        raise ProtocolError(f"feed {interval} for {feed['label']} blocked: {decision.reason}. Nothing was sent.")
    try:
        channel = channel_for(protocol)
    except ValueError:
        raise FeedChannelUnsupported(
            f"feed {interval} for {feed['label']}: protocol {protocol.id} uses channel {protocol.channel!r}, which "
            "cannot carry structural feeds. Nothing was sent. Runbook: 'A structural feed cannot be delivered'."
        ) from None
    # Once delivered, the feed is never built again: the ledger keeps the delivered file's hash.
    digest = exchange.result_sha256 if decision is None else build_feed(exchange_id, interval, run)
    name = workbook.feed_file_name(protocol, interval)
    payload = Staging(protocol.id, exchange_id).read_file(FEED_FILE) if decision is not None else b""
    if decision is not None and hashlib.sha256(payload).hexdigest() != digest:
        raise RuntimeError(f"feed exchange {exchange_id}: the staged feed's hash differs from the built feed; nothing sent")
    # The channel sends it once (the ledger's key): a re-run sends nothing, and an interrupted
    # send is finished. The certificate of an e-mailed feed must be valid on the day it is
    # encrypted — today, also for a back-filled month.
    sent = channel.send_file(
        protocol, key=key, kind="feed_delivered", exchange_id=exchange_id, name=name, payload=payload,
        subject=f"Groeipakket: structurele gegevens {interval.start} t.e.m. {interval.last_day} / "
        f"structural feed {interval.start} to {interval.last_day}",
        content_type=xlsx.CONTENT_TYPE, actor=run.actor, attempt=f"{run.run_id}:{run.try_number}", today=dt.date.today(),
        reference=f"feed/{protocol.id}/{exchange_id}/{digest}",
    )
    del payload
    already = sent.already_sent
    if already:
        log.info("feed exchange %s was already delivered; nothing sent again", exchange_id)
    elif sent.sha256 != digest:
        raise RuntimeError(f"feed exchange {exchange_id}: the delivered file's hash differs from the built feed; not recorded")
    how = sent.how if not already else "(the delivery was recorded by a later try)"
    size = sent.size
    with session_scope() as session:
        exchange = ledger.get_exchange(session, exchange_id)
        if exchange.state != "delivered":
            ledger.update_exchange(session, exchange, state="delivered")
        audit.record(
            session, "feed.delivered", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            data_categories=FEED_CATEGORIES, file_hashes={"feed": sent.sha256}, counts={"bytes": size},
            message=f"encrypted feed {name!r} for {interval} delivered {how}", fact_key=key,
        )
    record_retention(exchange_id, interval, name, run)
    with session_scope() as session:
        exchange = ledger.get_exchange(session, exchange_id)
        rows = (exchange.counts or {}).get("rows", 0)
    return {"protocol_id": protocol.id, "nis_code": protocol.nis_code, "name": name, "sha256": digest, "rows": rows,
            "already_delivered": already}


def record_retention(exchange_id: int, interval: FeedInterval, name: str, run: RunInfo) -> None:
    """Deletion deadlines of the delivered file and the staging folder; the staged changes go now."""
    with session_scope() as session:
        exchange = ledger.get_exchange(session, exchange_id)
        protocol = get(session, exchange.protocol_id)
    staging = Staging(protocol.id, exchange_id)
    removed = staging.remove("changes")  # the encrypted feed file stays: it is what a re-run re-sends
    deadline, rule = ledger.result_deadline(protocol, interval.end, what="feed", after="the interval ended")
    with session_scope() as session:
        sent = ledger.find_side_effect(session, f"feed:{exchange_id}:delivered")
        location = ((sent.detail or {}) if sent is not None else {}).get("location")
        if location is not None:  # else the copy is not the agency's (a mailed feed is in the municipality's mailbox)
            channel_for(protocol).schedule_copy(
                session, protocol, exchange_id=exchange_id, kind="result_file", location=location, deadline=deadline,
                rule=rule, sha256=exchange.result_sha256,
            )
        ledger.schedule_deletion(
            session, protocol_id=protocol.id, exchange_id=exchange_id, kind="staging", where=staging.where,
            location=staging.location(), deadline=deadline, rule=rule,
        )
        audit.record(
            session, "retention.scheduled", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            counts={"intermediates_deleted": int(removed)},
            message=f"feed file and staging to be deleted by {deadline.isoformat()}",
            fact_key=f"exchange:{exchange_id}:retention",
        )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------- 4. summarise


def summarise(feeds: list[dict[str, Any]], interval: FeedInterval, run: RunInfo) -> dict[str, Any]:
    """Counts per outcome, the deadline check; raises when a municipality was left undelivered."""

    protocol_ids = [f["protocol_id"] for f in feeds or []]
    with session_scope() as session:
        state = deadline.delivery_state(session, interval, protocol_ids)
        undelivered = sorted(pid for pid, at in state.items() if at is None)
        rows = session.scalars(
            sa.select(Exchange).where(Exchange.request_sha256.in_([interval.exchange_key(p) for p in protocol_ids]))
        ).all()
        total_rows = sum((e.counts or {}).get("rows", 0) for e in rows)
        summary = {"interval": str(interval), "municipalities": len(protocol_ids), "delivered": len(protocol_ids) - len(undelivered),
                   "not_delivered": len(undelivered), "rows": total_rows}
        audit.record(
            session, "feed.summary", "success" if not undelivered else "partial", actor=run.actor,
            counts={k: v for k, v in summary.items() if k != "interval"},
            message=f"structural feed {interval}: {summary['delivered']} of {summary['municipalities']} municipalities delivered"
            + (f"; not delivered: protocols {', '.join(map(str, undelivered))}" if undelivered else ""),
            fact_key=f"feed:{interval}:summary:{run.run_id}:{run.try_number}",
        )
    summary["deadline"] = deadline.check(interval, protocol_ids, run.actor)
    if undelivered:
        labels = {f["protocol_id"]: f["label"] for f in feeds}
        raise FeedIncomplete(
            f"structural feed {interval}: {len(undelivered)} of {len(protocol_ids)} municipalities not delivered "
            f"({'; '.join(labels[p] for p in undelivered)}); the others were delivered. Clear their failed "
            "deliver_feed tasks once fixed: re-runs never deliver twice. Runbook: 'A structural feed cannot be delivered'."
        )
    return summary


class FeedIncomplete(RuntimeError):
    """Some municipalities of a feed run were not delivered (each has its own failed task)."""

    permanent = True  # the summary's task fails without retries: clearing the failed deliveries fixes it
