"""The steps of a Method 2 campaign, each a plain function the DAG's tasks call.

Method 2: the agency contacts the families for the municipality, which receives only counts.
A campaign is one :class:`~welfare_exchange.db.models.Exchange` in the ledger, keyed on the
protocol, the reference date, the offer's text and the wave — so every run of the same
campaign, whatever its run id, continues the same campaign and never contacts a family twice.

The campaign's ledger states reuse the exchange states: ``received`` (opened), ``matched``
(families selected), ``built`` (letters rendered), ``delivered`` (report delivered), ``failed``.

Every step is idempotent (ledger, outbox, ``fact_key`` on every audit fact) and audits what it
did with keyed subject references — never an INSZ, an e-mail or a postal address. Steps raise
:class:`~welfare_exchange.errors.ProtocolError` / :class:`~welfare_exchange.errors.InputError`
for what no retry can fix, and let transport and database errors through (the DAG retries).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from welfare_exchange import audit, connections, ledger
from welfare_exchange.channels.registry import channel_for
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Exchange, Protocol
from welfare_exchange.errors import ProtocolError
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.outreach import letters as letters_lib
from welfare_exchange.outreach import outbox
from welfare_exchange.outreach import report as report_lib
from welfare_exchange.outreach import selection
from welfare_exchange.protocols.offer import offer_dates, offer_digest, validate_offer
from welfare_exchange.outreach.smtp import BOUNCED, NOT_SENT, SENT, UNCERTAIN, SmtpSession
from welfare_exchange.outreach.templates import Campaign, email_message, message_key
from welfare_exchange.protocols import check_gate, get
from welfare_exchange.settings import get_outreach_settings
from welfare_exchange.staging import Staging
from welfare_exchange.transport.mail import MailTransportError

log = logging.getLogger(__name__)

OUTBOX = "outbox"
SELECTION_CATEGORIES = ["INSZ begunstigde", "contactgegevens begunstigde", "recht op sociale toeslag", "domicilie kind"]
MESSAGE_CATEGORIES = ["contactgegevens begunstigde"]
LETTERS_KIND = "outreach_letters"


@dataclass(frozen=True)
class OutreachSettings:
    """How campaigns send, from the environment (read when a task runs, never at parse time).

    :param smtp_conn_id: the agency's outgoing mail server (``WELFARE_EXCHANGE_OUTREACH_SMTP_CONN``,
        default ``smtp_agency``).
    :param sender: the From address (``WELFARE_EXCHANGE_OUTREACH_SENDER``; default the SMTP
        connection's ``from_email`` extra).
    :param rate_per_second: at most this many e-mails per second (``WELFARE_EXCHANGE_OUTREACH_RATE``,
        default 5; 0 = unthrottled), so the agency's mail server and the receivers' spam filters
        see a steady stream, not a burst of 30,000.
    :param letters_per_pdf: letters per PDF for the mail room (``WELFARE_EXCHANGE_OUTREACH_LETTERS_PER_PDF``).
    :param gate_recheck_seconds: while sending, the protocol gate is checked again this often
        (``WELFARE_EXCHANGE_OUTREACH_GATE_RECHECK_SECONDS``): a revocation stops the campaign.
    """

    smtp_conn_id: str = "smtp_agency"
    sender: str | None = None
    rate_per_second: float = 5.0
    letters_per_pdf: int = 500
    gate_recheck_seconds: float = 30.0

    @classmethod
    def from_env(cls) -> OutreachSettings:
        s = get_outreach_settings()
        return cls(
            smtp_conn_id=s.smtp_conn_id, sender=s.sender, rate_per_second=s.rate_per_second,
            letters_per_pdf=s.letters_per_pdf, gate_recheck_seconds=s.gate_recheck_seconds,
        )

    def sender_address(self) -> str:
        if self.sender:
            return self.sender
        try:
            extra = connections.get(self.smtp_conn_id).extra
        except Exception as exc:
            raise ProtocolError(
                f"the SMTP connection {self.smtp_conn_id!r} cannot be read ({type(exc).__name__}): create it "
                f"(Admin > Connections, or AIRFLOW_CONN_{self.smtp_conn_id.upper()})"
            ) from None
        if not extra.get("from_email"):
            raise ProtocolError(
                f"no sender address for campaign e-mails: set WELFARE_EXCHANGE_OUTREACH_SENDER or the "
                f"'from_email' extra of connection {self.smtp_conn_id!r}"
            )
        return extra["from_email"]


# ------------------------------------------------------------------------------ helpers


def load_campaign(session, exchange_id: int) -> tuple[Exchange, Protocol, dict[str, Any]]:
    exchange = ledger.get_exchange(session, exchange_id)
    protocol = get(session, exchange.protocol_id)
    return exchange, protocol, validate_offer(protocol.offer)


def offer_gate(protocol: Protocol, offer: dict[str, Any], on: dt.date) -> tuple[bool, str]:
    """The protocol gate, and the offer's own window: a closed offer is not advertised."""
    decision = check_gate(protocol, on, kind="method2")
    if not decision.is_open:
        return False, decision.reason
    valid_from, valid_until, _ = offer_dates(offer)
    if on < valid_from:
        return False, f"the offer of protocol {protocol.id} opens only on {valid_from.isoformat()}: start the campaign then"
    if on > valid_until:
        return False, f"the offer of protocol {protocol.id} closed on {valid_until.isoformat()}: families can no longer apply"
    return True, decision.reason


def staged_families(protocol_id: int, exchange_id: int) -> list[selection.Family]:
    return selection.deserialise(Staging(protocol_id, exchange_id).read_encrypted("families"))


def campaign_texts(exchange: Exchange, protocol: Protocol, offer: dict[str, Any]) -> Campaign:
    # The first run's date stays the campaign's date: re-runs render identical messages.
    return Campaign(exchange.id, protocol.municipality, offer, exchange.exchange_date)


def campaign_key(protocol: Protocol, offer: dict[str, Any], wave: int) -> str:
    """What makes a campaign: protocol, reference date, the offer's exact text, the wave."""
    return f"method2:{protocol.id}:{protocol.reference_date.isoformat()}:{offer_digest(offer)[:16]}:wave{wave}"


# ----------------------------------------------------------------------- 1. open campaign


def open_campaign(protocol_id: int, run: RunInfo, *, wave: int = 1) -> int:
    """Open (or find again) the campaign's exchange in the ledger; returns its id.

    ``wave`` makes a deliberate second campaign with the same offer (a reminder) a new one;
    every other re-run or new run continues the same campaign.
    """
    if wave < 1:
        raise ProtocolError("the campaign wave must be 1 or more")
    with session_scope() as session:
        protocol = get(session, protocol_id)
        if protocol.kind != "method2":
            raise ProtocolError(f"protocol {protocol_id} is a {protocol.kind} protocol, not method2")
        offer = validate_offer(protocol.offer)
        is_open, reason = offer_gate(protocol, offer, run.exchange_date)
        if not is_open:
            raise ProtocolError(f"campaign not started: {reason}. Nothing was read or sent.")
        key = campaign_key(protocol, offer, wave)
        exchange, is_new = ledger.open_exchange(
            session, protocol, request_sha256=hashlib.sha256(key.encode()).hexdigest(),
            request_name=f"campagne golf {wave}", request_size=None, dag_id=run.dag_id, run_id=run.run_id,
            exchange_date=run.exchange_date,
        )
        if is_new:
            audit.record(
                session, "campaign.opened", actor=run.actor, protocol=protocol, exchange_id=exchange.id,
                message=f"Method 2 campaign (wave {wave}) opened: reference date {protocol.reference_date.isoformat()}, "
                f"offer {offer_digest(offer)[:16]}",
                fact_key=f"campaign:{exchange.id}:opened",
            )
        elif exchange.run_id != run.run_id:
            audit.record(
                session, "campaign.resumed", actor=run.actor, protocol=protocol, exchange_id=exchange.id,
                message=f"run continues campaign {exchange.id} (opened by run {exchange.run_id}); "
                "families already contacted are not contacted again",
                fact_key=f"campaign:{exchange.id}:resumed:{run.run_id}",
            )
        return exchange.id


# ----------------------------------------------------------------------- 2. select


def select_families(exchange_id: int, run: RunInfo) -> dict[str, int]:
    """Select the campaign's families once and stage the list, encrypted; returns counts.

    The list is frozen at the first selection: a re-run sends to the same families even when
    the store changed meanwhile (a later campaign wave picks up the newcomers).
    """
    fact = f"campaign:{exchange_id}:selected"
    with session_scope() as session:
        exchange, protocol, offer = load_campaign(session, exchange_id)
        staging = Staging(protocol.id, exchange.id)
        if staging.has("families") and audit_fact_exists(session, fact):
            log.info("families of campaign %s already selected; the frozen list is reused", exchange_id)
            return {k: exchange.counts[k] for k in ("selected", "email", "letter", "unreachable")}
        is_open, reason = offer_gate(protocol, offer, exchange.exchange_date)
        if not is_open:
            raise ProtocolError(f"campaign {exchange_id}: {reason}. Nothing was read.")
        families = selection.select_families(
            session, nis_code=protocol.nis_code, reference_date=protocol.reference_date,
            supplements=protocol.supplements, age_min=protocol.age_min, age_max=protocol.age_max,
            known_at=exchange.created_at,  # the store as known when the campaign opened (explainable later)
        )
    staging.write_encrypted("families", selection.serialise(families))
    counts = {"selected": len(families)}
    for channel in (selection.EMAIL, selection.LETTER, selection.UNREACHABLE):
        counts[channel] = sum(1 for f in families if f.channel == channel)
    with session_scope() as session:
        exchange, protocol, _ = load_campaign(session, exchange_id)
        ledger.update_exchange(session, exchange, state="matched", counts=counts)
        _schedule_staging_deletion(session, exchange, protocol)
        audit.record(
            session, "families.selected", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            data_categories=SELECTION_CATEGORIES, counts=counts, subjects=[f.insz for f in families],
            message=f"families with {', '.join(protocol.supplements)} on {protocol.reference_date.isoformat()} for a "
            f"child domiciled in NIS {protocol.nis_code} selected (one set query); list staged encrypted",
            fact_key=fact,
        )
    return counts


def audit_fact_exists(session, fact_key: str) -> bool:
    import sqlalchemy as sa

    from welfare_exchange.db.models import AuditRecord

    return session.scalar(sa.select(AuditRecord.id).where(AuditRecord.fact_key == fact_key)) is not None


# ----------------------------------------------------------------------- 3. render letters


def _batch_name(number: int) -> str:
    return f"letters-{number:03d}.pdf"


def render_letters(exchange_id: int, run: RunInfo, *, settings: OutreachSettings | None = None) -> dict[str, int]:
    """Render the letters of families without e-mail into PDF batches, encrypted at rest.

    Rendered once: a batch whose hash is recorded and whose file is present is kept, so a
    re-run neither changes a PDF the mail room may already hold nor renders twice.
    """
    settings = settings or OutreachSettings.from_env()
    with session_scope() as session:
        exchange, protocol, offer = load_campaign(session, exchange_id)
        per_pdf = int((exchange.counts or {}).get("letters_per_pdf") or settings.letters_per_pdf)
        if "letters_per_pdf" not in (exchange.counts or {}):
            # Batches are fixed at the first rendering: a changed setting must not reshuffle them.
            ledger.update_exchange(session, exchange, counts={"letters_per_pdf": per_pdf})
    campaign = campaign_texts(exchange, protocol, offer)
    staging = Staging(protocol.id, exchange.id)
    families = [f for f in staged_families(protocol.id, exchange.id) if f.channel == selection.LETTER]
    hashes: dict[str, str] = {}
    for number, batch in enumerate(letters_lib.batches(families, per_pdf), start=1):
        name = _batch_name(number)
        key = f"campaign:{exchange_id}:{name}"
        with session_scope() as session:
            effect = ledger.find_side_effect(session, key)
            recorded = effect.sha256 if effect is not None and effect.state == "done" else None
        if recorded and staging.has(name):
            hashes[name] = recorded
            continue
        pdf = letters_lib.render_batch(campaign, batch)
        digest = hashlib.sha256(pdf).hexdigest()
        staging.write_encrypted(name, pdf)
        del pdf
        with session_scope() as session:
            ledger.begin_side_effect(session, key, kind=LETTERS_KIND, exchange_id=exchange_id, target=name)
            ledger.complete_side_effect(session, key, sha256=digest, detail={"letters": len(batch)})
        hashes[name] = digest
    counts = {"letters": len(families), "pdfs": len(hashes)}
    with session_scope() as session:
        exchange, protocol, _ = load_campaign(session, exchange_id)
        ledger.update_exchange(session, exchange, state="built", counts={"letter_pdfs": len(hashes)})
        audit.record(
            session, "letters.rendered", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            data_categories=MESSAGE_CATEGORIES, file_hashes=hashes or None, counts=counts,
            subjects=[f.insz for f in families],
            message=f"{len(hashes)} letter PDF(s) for the mail room rendered and stored encrypted at rest",
            fact_key=f"campaign:{exchange_id}:letters_rendered",
        )
    return counts


# ----------------------------------------------------------------------- 4. gate again


def recheck_gate(exchange_id: int, run: RunInfo) -> str:
    """The protocol gate once more, right before anything reaches a family or the municipality.

    The ledger first: a campaign whose report was delivered has sent everything (the report
    waits for every message), so a protocol revoked afterwards neither fails it nor adds a fact.
    """
    with session_scope() as session:
        exchange, protocol, offer = load_campaign(session, exchange_id)
        if ledger.is_done(session, _report_key(exchange_id, 1)):
            return f"campaign {exchange_id} was completed (its report was delivered); nothing more goes out"
        is_open, reason = offer_gate(protocol, offer, exchange.exchange_date)
        if not is_open:
            ledger.update_exchange(session, exchange, state="failed", failure_code="protocol_closed")
            audit.record(
                session, "campaign.blocked", "refused", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
                message=reason, fact_key=f"campaign:{exchange_id}:blocked:{run.run_id}:{run.task_id}",
            )
    if not is_open:
        raise ProtocolError(f"campaign {exchange_id} stopped: {reason}. Messages already sent stay sent; no others go out.")
    return reason


# ----------------------------------------------------------------------- 5. send


def release_letters(exchange_id: int, run: RunInfo) -> int:
    """Settle the letter families in the outbox, batch by batch, each batch in one transaction.

    A released batch is what the mail room prints (``welfare-exchange outreach letters``).
    """
    released = 0
    with session_scope() as session:
        exchange, protocol, _ = load_campaign(session, exchange_id)
        per_pdf = int(exchange.counts["letters_per_pdf"])
    families = [f for f in staged_families(protocol.id, exchange.id) if f.channel == selection.LETTER]
    for number, batch in enumerate(letters_lib.batches(families, per_pdf), start=1):
        name = _batch_name(number)
        with session_scope() as session:
            exchange, protocol, _ = load_campaign(session, exchange_id)
            if not ledger.is_done(session, f"campaign:{exchange_id}:{name}"):
                raise ProtocolError(f"campaign {exchange_id}: {name} was not rendered; clear the render_letters task first")
            new = set(outbox.bulk_settle_letters(session, exchange_id, [f.beneficiary_id for f in batch], batch=name))
            if new:
                audit.record(
                    session, "letters.released", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
                    data_categories=MESSAGE_CATEGORIES, counts={"letters": len(new)},
                    subjects=[f.insz for f in batch if f.beneficiary_id in new],
                    message=f"{name}: {len(new)} letter(s) with the offer released to the mail room",
                    fact_key=f"campaign:{exchange_id}:{name}:released",
                )
            released += len(new)
    return released


def _settle(exchange_id: int, family: selection.Family, key: str, outcome: str, run: RunInfo, *, code=None, sha256=None):
    """Settle one e-mail and audit it, in one transaction: the fact and the state agree."""
    action, result = {
        outbox.EMAIL: ("message.sent", "success"),
        outbox.BOUNCED: ("message.bounced", "failure"),
        outbox.UNCERTAIN: ("message.uncertain", "unknown"),
    }[outcome]
    text = {
        outbox.EMAIL: "offer e-mailed to one family; the SMTP server accepted it",
        outbox.BOUNCED: f"offer e-mail to one family refused for good by the mail server (SMTP {code})",
        outbox.UNCERTAIN: "offer e-mail to one family may or may not have been accepted (interrupted); "
        "it is not sent again (at most once)",
    }[outcome]
    with session_scope() as session:
        exchange, protocol, _ = load_campaign(session, exchange_id)
        outbox.settle(session, key, outcome, code=code, sha256=sha256)
        audit.record(
            session, action, result, actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            data_categories=MESSAGE_CATEGORIES, subject=family.insz,
            file_hashes={"message": sha256} if sha256 else None, message=text, fact_key=f"{key}:{outcome}",
        )


def send_messages(exchange_id: int, run: RunInfo, *, settings: OutreachSettings | None = None) -> dict[str, int]:
    """Send every family its message through the outbox: throttled, resumable, at most once.

    Letters are released first (database only). Then e-mails, one by one at the configured
    rate: each is begun in the outbox before it is handed to the SMTP server and settled
    after. A run that finds a message begun but never settled (the previous worker died in
    between) settles it as ``uncertain`` and does not send it again (see
    :mod:`~welfare_exchange.outreach.outbox`). A message the server did not take now (4xx,
    connection down) stays for the next try, which the task's retries bring.
    """
    settings = settings or OutreachSettings.from_env()
    recheck_gate(exchange_id, run)
    release_letters(exchange_id, run)
    with session_scope() as session:
        exchange, protocol, offer = load_campaign(session, exchange_id)
        entries = outbox.entries(session, exchange_id)
    campaign = campaign_texts(exchange, protocol, offer)
    families = [f for f in staged_families(protocol.id, exchange.id) if f.channel == selection.EMAIL]
    by_key = {message_key(exchange_id, f.beneficiary_id): f for f in families}

    stranded = [e for e in entries.values() if e.in_flight and e.key in by_key]
    for entry in stranded:
        _settle(exchange_id, by_key[entry.key], entry.key, outbox.UNCERTAIN, run)
    if stranded:
        log.warning("campaign %s: %d message(s) interrupted by an earlier crash settled as uncertain, not re-sent",
                    exchange_id, len(stranded))
    settled = {e.key for e in entries.values() if e.settled} | {e.key for e in stranded}
    todo = [f for f in families if message_key(exchange_id, f.beneficiary_id) not in settled]
    log.info("campaign %s: %d e-mail(s) to send, %d already settled", exchange_id, len(todo), len(families) - len(todo))

    sender = settings.sender_address() if todo else ""
    throttle = outbox.Throttle(settings.rate_per_second)
    deferred = 0
    last_gate = dt.datetime.now(dt.timezone.utc)
    with SmtpSession(settings.smtp_conn_id) as smtp:
        for done_count, family in enumerate(todo):
            now = dt.datetime.now(dt.timezone.utc)
            if (now - last_gate).total_seconds() >= settings.gate_recheck_seconds:
                recheck_gate(exchange_id, run)  # a revocation stops the campaign mid-way
                last_gate = now
            throttle.wait()
            message_id, data = email_message(campaign, beneficiary_id=family.beneficiary_id, recipient=family.email, sender=sender)
            with session_scope() as session:
                key = outbox.begin(session, exchange_id, family.beneficiary_id, channel=outbox.EMAIL, message_id=message_id)
            result = smtp.send(data, sender=sender, recipient=family.email)
            if result.outcome == SENT:
                _settle(exchange_id, family, key, outbox.EMAIL, run, sha256=hashlib.sha256(data).hexdigest())
            elif result.outcome == BOUNCED:
                _settle(exchange_id, family, key, outbox.BOUNCED, run, code=result.code)
            elif result.outcome == UNCERTAIN:
                _settle(exchange_id, family, key, outbox.UNCERTAIN, run)
            else:
                assert result.outcome == NOT_SENT
                with session_scope() as session:
                    outbox.mark_not_sent(session, key, result.reason, result.code)
                if result.code is None:  # the server is unreachable: the next try continues from here
                    raise MailTransportError(
                        f"campaign {exchange_id}: {result.reason}; {done_count} e-mail(s) handled in this try, the "
                        f"rest is sent on the task's retry (nothing is sent twice)"
                    )
                deferred += 1  # this recipient's server said "later" (4xx): the retry tries again
    with session_scope() as session:
        exchange, protocol, _ = load_campaign(session, exchange_id)
        counts = outbox.outcome_counts(session, exchange_id)
        ledger.update_exchange(session, exchange, counts={f"outbox_{k}": v for k, v in counts.items()})
    if deferred:
        raise MailTransportError(
            f"campaign {exchange_id}: {deferred} e-mail(s) were deferred by the receiving server (4xx); "
            "the task's retry sends them (nothing is sent twice)"
        )
    return counts


# ----------------------------------------------------------------------- 6. report


def _report_key(exchange_id: int, revision: int) -> str:
    return f"campaign:{exchange_id}:report" + (f":v{revision}" if revision > 1 else "")


def _report_counts(session, exchange: Exchange) -> dict[str, int]:
    outcomes = outbox.outcome_counts(session, exchange.id)
    if outcomes["pending"]:
        raise RuntimeError(
            f"campaign {exchange.id}: {outcomes['pending']} message(s) are not settled yet; the report "
            "waits until send_messages has finished (clear send_messages to continue sending)"
        )
    return report_lib.report_counts(outcomes, exchange.counts.get("unreachable", 0))


def report_to_municipality(exchange_id: int, run: RunInfo) -> dict[str, Any]:
    """Build the counts-only report and deliver it through the protocol's channel — once."""
    recheck_gate(exchange_id, run)
    key = _report_key(exchange_id, 1)
    with session_scope() as session:
        exchange, protocol, _ = load_campaign(session, exchange_id)
        counts = _report_counts(session, exchange)
        effect = ledger.find_side_effect(session, key)
        if effect is not None and effect.state == "done":
            log.info("report of campaign %s was already delivered; nothing sent again", exchange_id)
            name = report_lib.report_name(protocol.nis_code, protocol.id, exchange_id, 1)
            return {"name": name, "sha256": effect.sha256, "already_delivered": True}
    return _deliver_report_revision(exchange_id, 1, counts, run.actor)


def update_report(exchange_id: int, *, actor: audit.Actor, on: dt.date | None = None) -> dict[str, Any]:
    """Deliver the report again, as its next version, when what it shows has changed since the last.

    After an operator resolved uncertain messages (:mod:`~welfare_exchange.outreach.resolution`)
    the municipality's figures change; the report it holds does not. Running this again without
    a change sends nothing. A version begun and not finished (a crash) is finished first.
    """
    with session_scope() as session:
        exchange, protocol, _ = load_campaign(session, exchange_id)
        if not ledger.is_done(session, _report_key(exchange_id, 1)):
            raise ProtocolError(
                f"campaign {exchange_id} has not delivered its first report yet: let the DAG's report_to_municipality "
                "task finish first"
            )
        decision = check_gate(protocol, on or dt.date.today(), kind="method2")
        if not decision.is_open:
            raise ProtocolError(f"campaign {exchange_id}: no updated report: {decision.reason}")
        counts = _report_counts(session, exchange)
        revision = int(exchange.counts.get("report_revision", 1))
        unfinished = ledger.find_side_effect(session, _report_key(exchange_id, revision + 1)) is not None
        shown_before = exchange.counts.get("report")
    if not unfinished and report_lib.suppress(counts) == shown_before:
        return {"revision": revision, "unchanged": True}
    return _deliver_report_revision(exchange_id, revision + 1, counts, actor)


def _deliver_report_revision(exchange_id: int, revision: int, counts: dict[str, int], actor: audit.Actor) -> dict[str, Any]:
    """Render version ``revision`` of the report and deliver it: begun before, done after."""
    key = _report_key(exchange_id, revision)
    with session_scope() as session:
        exchange, protocol, offer = load_campaign(session, exchange_id)
    data, shown = report_lib.render(
        municipality=protocol.municipality, nis_code=protocol.nis_code, protocol_id=protocol.id,
        exchange_id=exchange_id, reference_date=protocol.reference_date, campaign_date=exchange.exchange_date,
        offer_title=offer["title"], counts=counts, revision=revision,
    )
    name = report_lib.report_name(protocol.nis_code, protocol.id, exchange_id, revision)
    Staging(protocol.id, exchange.id).write_file(name, data)  # counts only: no personal data
    channel = channel_for(protocol)
    sent = channel.send_file(
        protocol, key=key, kind="report_delivered", exchange_id=exchange_id, name=name, payload=data,
        subject=f"Groeipakket: rapport campagne {exchange_id}", content_type="text/plain", actor=actor,
        attempt=f"v{revision}", today=dt.date.today(), sensitive=False,
    )
    digest = sent.sha256
    with session_scope() as session:
        exchange, protocol, _ = load_campaign(session, exchange_id)
        ledger.update_exchange(session, exchange, state="delivered", counts={"report": shown, "report_revision": revision})
        if sent.location is not None:
            deadline, rule = ledger.result_deadline(protocol, exchange.exchange_date, what="report", after="the campaign")
            channel.schedule_copy(session, protocol, exchange_id=exchange_id, kind="report", location=sent.location,
                                  deadline=deadline, rule=rule, sha256=digest)
        version = f" (version {revision}, replaces version {revision - 1})" if revision > 1 else ""
        audit.record(
            session, "report.delivered", actor=actor, protocol=protocol, exchange_id=exchange_id,
            file_hashes={"report": digest}, counts={"shown": shown},
            message=f"counts-only campaign report {name!r}{version} delivered ({channel.name}); "
            "counts under 10 suppressed",
            fact_key=f"{key}:delivered",
        )
    return {"name": name, "sha256": digest, "already_delivered": sent.already_sent, "revision": revision}


# ----------------------------------------------------------------------- 7. retention


def _schedule_staging_deletion(session, exchange, protocol) -> dt.date:
    """The campaign's staging folder (family list, letter PDFs, report) goes ``result_retention_days``
    after the campaign. Scheduled as soon as the family list is written, so a campaign that stops
    halfway leaves no list without a deadline; an upsert, so asking again changes nothing."""
    deadline, rule = ledger.result_deadline(protocol, exchange.exchange_date, after="the campaign",
                                            what="campaign staging (family list, letter PDFs, report)")
    staging = Staging(protocol.id, exchange.id)
    ledger.schedule_deletion(
        session, protocol_id=protocol.id, exchange_id=exchange.id, kind="staging", where=staging.where,
        location=staging.location(), deadline=deadline, rule=rule,
    )
    return deadline


def record_retention(exchange_id: int, run: RunInfo) -> dict[str, str]:
    """Record when the campaign's staged family list, letters and report are deleted."""
    with session_scope() as session:
        exchange, protocol, _ = load_campaign(session, exchange_id)
        deadline = _schedule_staging_deletion(session, exchange, protocol)  # for campaigns selected before it moved
        audit.record(
            session, "retention.scheduled", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            message=f"campaign files to be deleted by {deadline.isoformat()}",
            fact_key=f"campaign:{exchange_id}:retention",
        )
    return {"deadline": deadline.isoformat()}
