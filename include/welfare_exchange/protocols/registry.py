"""Create protocols, move them through their lifecycle, and decide whether data may flow.

Lifecycle (every transition timestamped in ``protocol_transition`` and audited)::

    draft ──submit──▶ submitted ──advise──▶ advised ──sign──▶ signed
      ▲                   │                                  │  ▲
      └────return─────────┘                          suspend │  │ resume
                                                             ▼  │
                                                          suspended
    revoke: from any non-final status → revoked;  expire: signed/suspended → expired

``revoked`` and ``expired`` are final.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange import audit
from welfare_exchange.db.models import DEFAULT_REFERENCE_DATE, Protocol, ProtocolTransition
from welfare_exchange.errors import IllegalTransition, InputError, ProtocolError
from welfare_exchange.outreach.offer import validate_offer
from welfare_exchange.settings import get_settings

KINDS = ("method1", "method2", "structural")
CHANNELS = ("sftp", "smime")
STATUSES = ("draft", "submitted", "advised", "signed", "suspended", "revoked", "expired")
SUPPLEMENTS = ("sociale_toeslag", "zorgtoeslag", "schooltoeslag")

#: Fields a result may carry; a protocol allows a subset (minimal and proportional).
ALLOWED_RESULT_FIELDS = (
    "child_insz",
    "beneficiary_insz",
    "supplement",
    "period_start",
    "period_end",
)
DEFAULT_RESULT_FIELDS = ("child_insz", "beneficiary_insz", "period_start", "period_end")

#: action → (allowed from-statuses, to-status)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "submit": (("draft",), "submitted"),
    "return": (("submitted",), "draft"),
    "advise": (("submitted",), "advised"),
    "sign": (("advised",), "signed"),
    "suspend": (("signed",), "suspended"),
    "resume": (("suspended",), "signed"),
    "revoke": (("draft", "submitted", "advised", "signed", "suspended"), "revoked"),
    "expire": (("signed", "suspended"), "expired"),
}

DEFAULT_LEGAL_BASIS = (
    "Decreet van 27 april 2018 tot regeling van de toelagen in het kader van het gezinsbeleid "
    "(Groeipakketdecreet); art. 6.1.c en 6.1.e AVG; protocol tot gegevensuitwisseling"
)
DEFAULT_PURPOSE = {
    "method1": "Automatische toekenning van een lokale financiële steunmaatregel aan gezinnen met een sociale toeslag",
    "method2": "Het Groeipakket informeert gezinnen met een sociale toeslag over het aanbod van het lokaal bestuur",
    "structural": "Structurele gegevensdeling voor het lokaal sociaal beleid",
}


def get(session: Session, protocol_id: int) -> Protocol:
    """The protocol with this id, or a clear error."""
    protocol = session.get(Protocol, protocol_id)
    if protocol is None:
        raise InputError(f"no protocol with id {protocol_id}: see `welfare-exchange protocol list`")
    return protocol


def create(
    session: Session,
    *,
    nis_code: str,
    municipality: str,
    kind: str,
    channel: str,
    key_connection: str,
    actor: audit.Actor,
    channel_connection: str | None = None,
    legal_basis: str | None = None,
    purpose: str | None = None,
    allowed_fields: list[str] | None = None,
    reference_date: dt.date = DEFAULT_REFERENCE_DATE,
    supplements: list[str] | None = None,
    age_min: int = 0,
    age_max: int = 25,
    request_retention_days: int = 30,
    result_retention_days: int = 90,
    delete_request_after_match: bool = False,
    valid_from: dt.date | None = None,
    valid_until: dt.date | None = None,
    college_decision_ref: str | None = None,
    college_decision_date: dt.date | None = None,
    dpo_advice_date: dt.date | None = None,
    sender_address: str | None = None,
    sender_certificates: list[str] | None = None,
    require_signature: bool = False,
    schedule: str | None = None,
    offer: dict[str, Any] | None = None,
) -> Protocol:
    """Register a new protocol in ``draft``; every argument is checked with a clear error."""
    if not (len(nis_code) == 5 and nis_code.isdigit()):
        raise InputError(f"NIS code must be 5 digits, got {nis_code!r}")
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if channel not in CHANNELS:
        raise InputError(f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    fields = list(allowed_fields) if allowed_fields is not None else list(DEFAULT_RESULT_FIELDS)
    unknown = sorted(set(fields) - set(ALLOWED_RESULT_FIELDS))
    if unknown:
        raise InputError(f"unknown result field(s) {', '.join(unknown)}; allowed: {', '.join(ALLOWED_RESULT_FIELDS)}")
    supplements = list(supplements) if supplements is not None else ["sociale_toeslag"]
    if set(supplements) - set(SUPPLEMENTS):
        raise InputError(f"supplements must be among {', '.join(SUPPLEMENTS)}")
    if not 0 <= age_min <= age_max <= 120:
        raise InputError("age window must satisfy 0 <= min <= max")
    max_days = get_settings().max_retention_days
    for name, days in (("request", request_retention_days), ("result", result_retention_days)):
        if not 0 <= days <= max_days:
            raise InputError(
                f"{name} retention of {days} days exceeds the legal maximum of {max_days} days "
                "(WELFARE_EXCHANGE_MAX_RETENTION_DAYS)"
            )
    if valid_from and valid_until and valid_until < valid_from:
        raise InputError("valid-until lies before valid-from")
    # An e-mail protocol without address or certificate can be drafted; the exchange refuses
    # to run until both are registered (the CLI asks for them up front).
    certificates = _check_certificates(sender_certificates or [])
    if kind == "method2":
        # The offer is what the families receive: checked now, not when the campaign runs.
        offer = validate_offer(offer)
        offer_reference = dt.date.fromisoformat(offer["reference_date"])
        if reference_date not in (DEFAULT_REFERENCE_DATE, offer_reference):
            raise InputError("a method2 protocol takes its reference date from its offer; leave --reference-date out")
        reference_date = offer_reference
    protocol = Protocol(
        nis_code=nis_code,
        municipality=municipality,
        kind=kind,
        channel=channel,
        channel_connection=channel_connection or f"{channel}_{nis_code}",
        key_connection=key_connection,
        legal_basis=legal_basis or DEFAULT_LEGAL_BASIS,
        purpose=purpose or DEFAULT_PURPOSE[kind],
        allowed_fields=fields,
        reference_date=reference_date,
        supplements=supplements,
        age_min=age_min,
        age_max=age_max,
        request_retention_days=request_retention_days,
        result_retention_days=result_retention_days,
        delete_request_after_match=delete_request_after_match,
        valid_from=valid_from,
        valid_until=valid_until,
        college_decision_ref=college_decision_ref,
        college_decision_date=college_decision_date,
        dpo_advice_date=dpo_advice_date,
        sender_address=sender_address.strip().lower() if sender_address else None,
        sender_certificates=certificates or None,
        require_signature=require_signature,
        schedule=schedule,
        offer=offer,
        status="draft",
        status_changed_at=dt.datetime.now(dt.timezone.utc),
    )
    session.add(protocol)
    session.flush()
    session.add(ProtocolTransition(protocol_id=protocol.id, from_status=None, to_status="draft", actor=actor.name))
    audit.record(
        session,
        "protocol.created",
        actor=actor,
        protocol=protocol,
        message=f"protocol {protocol.id} ({kind}, {channel}) created for {municipality} ({nis_code})",
    )
    return protocol


def _check_certificates(pems: list[str]) -> list[str]:
    """Each registered certificate must be a readable X.509 certificate (PEM); returned as PEM text."""
    from cryptography.hazmat.primitives import serialization

    from welfare_exchange.transport import smime

    out = []
    for number, pem in enumerate(pems, start=1):
        try:
            certificate = smime.load_certificate(pem)
        except smime.SmimeError:
            raise InputError(f"sender certificate {number} is not a readable X.509 certificate (PEM or DER)") from None
        out.append(certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    return out


def transition(
    session: Session,
    protocol_id: int,
    action: str,
    *,
    actor: audit.Actor,
    reason: str | None = None,
    on: dt.date | None = None,
) -> Protocol:
    """Apply a lifecycle ``action`` (submit, advise, sign, …); illegal transitions are refused.

    Signing requires the municipality's college decision and its DPO's advice; it sets the
    signature date and, when empty, the start of validity.
    """
    if action not in TRANSITIONS:
        raise InputError(f"unknown protocol action {action!r}; one of {', '.join(TRANSITIONS)}")
    protocol = get(session, protocol_id)
    allowed_from, to_status = TRANSITIONS[action]
    if protocol.status not in allowed_from:
        raise IllegalTransition(
            f"cannot {action} protocol {protocol.id}: it is {protocol.status}, "
            f"and {action} is only allowed from {' or '.join(allowed_from)}"
        )
    today = on or dt.date.today()
    if action == "sign":
        missing = [
            label
            for label, value in (
                ("college decision reference (--college-decision-ref)", protocol.college_decision_ref),
                ("college decision date (--college-decision-date)", protocol.college_decision_date),
                ("DPO advice date (--dpo-advice-date)", protocol.dpo_advice_date),
            )
            if not value
        ]
        if missing:
            raise ProtocolError(f"cannot sign protocol {protocol.id}: missing {', '.join(missing)}")
        protocol.signature_date = today
        protocol.valid_from = protocol.valid_from or today
    previous = protocol.status
    protocol.status = to_status
    protocol.status_changed_at = dt.datetime.now(dt.timezone.utc)
    session.add(
        ProtocolTransition(protocol_id=protocol.id, from_status=previous, to_status=to_status, actor=actor.name, reason=reason)
    )
    audit.record(
        session,
        f"protocol.{action}",
        actor=actor,
        protocol=protocol,
        message=f"protocol {protocol.id}: {previous} -> {to_status}" + (f" ({reason})" if reason else ""),
    )
    session.flush()
    return protocol


@dataclass(frozen=True)
class GateDecision:
    """Whether data may flow under a protocol on a given day.

    ``state`` is ``open`` (go), ``wait`` (not yet: not signed or not yet valid) or ``closed``
    (never: revoked, suspended, expired, wrong channel or fields); ``reason`` says why.
    """

    state: str
    reason: str

    @property
    def is_open(self) -> bool:
        return self.state == "open"


def check_gate(
    protocol: Protocol,
    on: dt.date,
    *,
    channel: str | None = None,
    fields: list[str] | None = None,
    kind: str | None = None,
) -> GateDecision:
    """The protocol gate: signed, valid on ``on``, and allowing this channel and these fields."""
    name = f"protocol {protocol.id} ({protocol.municipality}, {protocol.nis_code})"
    if protocol.status in ("revoked", "suspended", "expired"):
        return GateDecision("closed", f"{name} is {protocol.status}: no data may be exchanged under it")
    if kind is not None and protocol.kind != kind:
        return GateDecision("closed", f"{name} is a {protocol.kind} protocol, not {kind}")
    if channel is not None and protocol.channel != channel:
        return GateDecision("closed", f"{name} allows channel {protocol.channel}, not {channel}")
    if fields is not None:
        extra = sorted(set(fields) - set(protocol.allowed_fields))
        if extra:
            return GateDecision("closed", f"{name} does not allow the field(s) {', '.join(extra)}")
    if protocol.valid_until is not None and on > protocol.valid_until:
        return GateDecision("closed", f"{name} expired on {protocol.valid_until.isoformat()}")
    if protocol.status != "signed":
        return GateDecision("wait", f"{name} is {protocol.status}, not yet signed")
    if protocol.valid_from is not None and on < protocol.valid_from:
        return GateDecision("wait", f"{name} is valid only from {protocol.valid_from.isoformat()}")
    return GateDecision("open", f"{name} is signed and valid on {on.isoformat()}")


SNAPSHOT_FIELDS = (
    "id", "nis_code", "municipality", "kind", "channel", "channel_connection", "key_connection",
    "status", "schedule", "valid_from", "valid_until", "sender_address",
)


def snapshot(session: Session) -> list[dict[str, Any]]:
    """The registry as the DAG files see it: no personal data, no secrets."""
    protocols = session.scalars(sa.select(Protocol).order_by(Protocol.id))
    return [
        {name: (v.isoformat() if isinstance(v := getattr(p, name), dt.date) else v) for name in SNAPSHOT_FIELDS}
        for p in protocols
    ]


def write_snapshot(session: Session, path: os.PathLike | str | None = None) -> str:
    """Write the registry snapshot the DAG files read at parse time (atomic rename).

    DAG files never query the database while being parsed; they read this file. Every CLI
    command that changes a protocol rewrites it.
    """
    target = os.fspath(path or get_settings().registry_snapshot)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    data = json.dumps({"protocols": snapshot(session)}, indent=2, sort_keys=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".snapshot-")
    with os.fdopen(fd, "w") as handle:
        handle.write(data)
    os.replace(tmp, target)
    return target
