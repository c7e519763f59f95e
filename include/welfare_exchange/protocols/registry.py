"""Create protocols, move them through their lifecycle, and decide whether data may flow.

Lifecycle (every transition timestamped in ``protocol_transition`` and audited)::

    draft ──submit──▶ submitted ──advise──▶ advised ──sign──▶ signed
      ▲ │                 │                    │             │  ▲
      │ amend             │                    │     suspend │  │ resume
      └─┘◀────return──────┴────────return──────┘             ▼  │
                                                          suspended
    revoke: from any non-final status → revoked;  expire: signed/suspended → expired

Only a ``draft`` can be amended (:func:`amend`): a protocol the agency has advised on is
returned to draft first, and then submitted and advised again, so nobody signs a text other
than the one advised. ``revoked`` and ``expired`` are final.
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
from welfare_exchange.protocols.channels import names as channel_names
from welfare_exchange.db.models import DEFAULT_REFERENCE_DATE, SUPPLEMENTS, Protocol, ProtocolTransition
from welfare_exchange.errors import IllegalTransition, InputError, ProtocolError
from welfare_exchange.protocols.offer import validate_offer
from welfare_exchange.settings import get_settings

KINDS = ("method1", "method2", "structural", "referral")
STATUSES = ("draft", "submitted", "advised", "signed", "suspended", "revoked", "expired")

#: Fields a result may carry; a protocol allows a subset (minimal and proportional).
ALLOWED_RESULT_FIELDS = (
    "child_insz",
    "beneficiary_insz",
    "supplement",
    "period_start",
    "period_end",
)
DEFAULT_RESULT_FIELDS = ("child_insz", "beneficiary_insz", "period_start", "period_end")
#: Fields a referral to the Sociaal Huis may carry (the agreement allows a subset): whom to contact
#: and why — never an INSZ, never the nurse's notes behind a criterion.
REFERRAL_FIELDS = (
    "parent_name",
    "parent_address",
    "parent_phone",
    "parent_email",
    "child_birth_month",
    "criteria",
)
#: What a referral protocol schedules by default: the referral list goes out weekly.
REFERRAL_SCHEDULE = "@weekly"

#: action → (allowed from-statuses, to-status)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "submit": (("draft",), "submitted"),
    "return": (("submitted", "advised"), "draft"),
    "advise": (("submitted",), "advised"),
    "sign": (("advised",), "signed"),
    "suspend": (("signed",), "suspended"),
    "resume": (("suspended",), "signed"),
    "revoke": (("draft", "submitted", "advised", "signed", "suspended"), "revoked"),
    "expire": (("signed", "suspended"), "expired"),
}

#: The attributes a protocol is created with (``status`` and its dates aside).
PROTOCOL_FIELDS = (
    "nis_code", "municipality", "kind", "channel", "channel_connection", "key_connection", "legal_basis",
    "purpose", "allowed_fields", "reference_date", "supplements", "age_min", "age_max", "request_retention_days",
    "result_retention_days", "delete_request_after_match", "valid_from", "valid_until", "college_decision_ref",
    "college_decision_date", "dpo_advice_date", "sender_address", "sender_certificates", "require_signature",
    "schedule", "offer", "agreement_ref", "agreement_date", "secrecy_conditions", "consent_required",
)
#: What an amendment may not change: they make the protocol what it is (its DAG, its directories,
#: its channel). Such a change is a new protocol (revoke the draft, create another).
FIXED_FIELDS = ("nis_code", "kind", "channel")
AMENDABLE_FIELDS = tuple(name for name in PROTOCOL_FIELDS if name not in FIXED_FIELDS)
#: The statuses in which a protocol's text may still change.
AMENDABLE_STATUSES = ("draft",)

DEFAULT_LEGAL_BASIS = (
    "Decreet van 27 april 2018 tot regeling van de toelagen in het kader van het gezinsbeleid "
    "(Groeipakketdecreet); art. 6.1.c en 6.1.e AVG; protocol tot gegevensuitwisseling"
)
DEFAULT_PURPOSE = {
    "method1": "Automatische toekenning van een lokale financiële steunmaatregel aan gezinnen met een sociale toeslag",
    "method2": "Het Groeipakket informeert gezinnen met een sociale toeslag over het aanbod van het lokaal bestuur",
    "structural": "Structurele gegevensdeling voor het lokaal sociaal beleid",
    "referral": (
        "Structurele toeleiding van gezinnen met een kind geboren in kansarmoede naar het Sociaal Huis, met "
        "hun toestemming, om hen vroegtijdig en maximaal te ondersteunen"
    ),
}
DEFAULT_REFERRAL_LEGAL_BASIS = (
    "Samenwerkingsovereenkomst tussen Opgroeien en het Sociaal Huis; toestemming van het gezin (art. 6.1.a en "
    "9.2.a AVG); beroepsgeheim volgens de voorwaarden van de overeenkomst"
)


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
    agreement_ref: str | None = None,
    agreement_date: dt.date | None = None,
    secrecy_conditions: str | None = None,
    consent_required: bool | None = None,
) -> Protocol:
    """Register a new protocol in ``draft``; every argument is checked with a clear error.

    A ``referral`` protocol is the cooperation agreement with a Sociaal Huis: it needs the
    agreement's reference and date and its professional-secrecy conditions, allows fields of
    :data:`REFERRAL_FIELDS` (default: all of them), requires consent (``consent_required``
    defaults to, and must be, true) and runs weekly unless ``schedule`` says otherwise.
    """
    referral = kind == "referral"
    values = _validated({
        "nis_code": nis_code,
        "municipality": municipality,
        "kind": kind,
        "channel": channel,
        "channel_connection": channel_connection or f"{channel}_{nis_code}",
        "key_connection": key_connection,
        "legal_basis": legal_basis or (DEFAULT_REFERRAL_LEGAL_BASIS if referral else DEFAULT_LEGAL_BASIS),
        "purpose": purpose or DEFAULT_PURPOSE.get(kind),
        "allowed_fields": (
            list(allowed_fields) if allowed_fields is not None
            else list(REFERRAL_FIELDS if referral else DEFAULT_RESULT_FIELDS)
        ),
        "reference_date": reference_date,
        "supplements": list(supplements) if supplements is not None else ["sociale_toeslag"],
        "age_min": age_min,
        "age_max": age_max,
        "request_retention_days": request_retention_days,
        "result_retention_days": result_retention_days,
        "delete_request_after_match": delete_request_after_match,
        "valid_from": valid_from,
        "valid_until": valid_until,
        "college_decision_ref": college_decision_ref,
        "college_decision_date": college_decision_date,
        "dpo_advice_date": dpo_advice_date,
        "sender_address": sender_address,
        "sender_certificates": sender_certificates,
        "require_signature": require_signature,
        "schedule": schedule or (REFERRAL_SCHEDULE if referral else None),
        "offer": offer,
        "agreement_ref": agreement_ref,
        "agreement_date": agreement_date,
        "secrecy_conditions": secrecy_conditions,
        "consent_required": referral if consent_required is None else consent_required,
    })
    protocol = Protocol(**values, status="draft", status_changed_at=dt.datetime.now(dt.timezone.utc))
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


def _validated(values: dict[str, Any]) -> dict[str, Any]:
    """A protocol's attributes checked together (each with a clear error) and normalised as stored.

    Shared by :func:`create` and :func:`amend`, so an amended draft obeys the same rules as a
    new one. ``values`` holds every attribute of :data:`PROTOCOL_FIELDS`.
    """
    values = dict(values)
    nis_code, kind, channel = values["nis_code"], values["kind"], values["channel"]
    if not (isinstance(nis_code, str) and len(nis_code) == 5 and nis_code.isdigit()):
        raise InputError(f"NIS code must be 5 digits, got {nis_code!r}")
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if channel not in channel_names():
        raise InputError(f"channel must be one of {', '.join(channel_names())}, got {channel!r}")
    for name in ("municipality", "channel_connection", "key_connection", "legal_basis", "purpose"):
        if not (values[name] or "").strip():
            raise InputError(f"the protocol's {name.replace('_', ' ')} must not be empty")
    allowed = REFERRAL_FIELDS if kind == "referral" else ALLOWED_RESULT_FIELDS
    unknown = sorted(set(values["allowed_fields"]) - set(allowed))
    if unknown:
        what = "referral" if kind == "referral" else "result"
        raise InputError(f"unknown {what} field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    if not values["allowed_fields"]:
        raise InputError(f"a protocol must allow at least one field, among {', '.join(allowed)}")
    _check_agreement(values)
    if not values["supplements"] or set(values["supplements"]) - set(SUPPLEMENTS):
        raise InputError(f"supplements must be among {', '.join(SUPPLEMENTS)}")
    if not 0 <= values["age_min"] <= values["age_max"] <= 120:
        raise InputError("age window must satisfy 0 <= min <= max")
    max_days = get_settings().max_retention_days
    for name in ("request", "result"):
        days = values[f"{name}_retention_days"]
        if not 0 <= days <= max_days:
            raise InputError(
                f"{name} retention of {days} days exceeds the legal maximum of {max_days} days "
                "(WELFARE_EXCHANGE_MAX_RETENTION_DAYS)"
            )
    if values["valid_from"] and values["valid_until"] and values["valid_until"] < values["valid_from"]:
        raise InputError("valid-until lies before valid-from")
    # An e-mail protocol without address or certificate can be drafted; the exchange refuses
    # to run until both are registered (the CLI asks for them up front).
    values["sender_address"] = values["sender_address"].strip().lower() if values["sender_address"] else None
    values["sender_certificates"] = _check_certificates(values["sender_certificates"] or []) or None
    if kind == "method2":
        # The offer is what the families receive: checked now, not when the campaign runs.
        values["offer"] = validate_offer(values["offer"])
        offer_reference = dt.date.fromisoformat(values["offer"]["reference_date"])
        if values["reference_date"] not in (DEFAULT_REFERENCE_DATE, offer_reference):
            raise InputError("a method2 protocol takes its reference date from its offer; leave --reference-date out")
        values["reference_date"] = offer_reference
    return values


def _check_agreement(values: dict[str, Any]) -> None:
    """The cooperation agreement of a referral protocol, normalised in place; other kinds have none.

    A referral reaches families only with their consent, under an agreement that sets the
    professional-secrecy conditions: a referral protocol without either cannot be drafted, and
    ``consent_required`` cannot be switched off.
    """
    for name in ("agreement_ref", "secrecy_conditions"):
        values[name] = (values[name] or "").strip() or None
    values["consent_required"] = bool(values["consent_required"])
    if values["kind"] != "referral":
        given = [name for name in ("agreement_ref", "agreement_date", "secrecy_conditions") if values[name]]
        if given or values["consent_required"]:
            names = ", ".join(n.replace("_", " ") for n in given + (["consent required"] if values["consent_required"] else []))
            raise InputError(f"{names}: only a referral protocol has a cooperation agreement and a consent requirement")
        return
    missing = [
        label
        for name, label in (
            ("agreement_ref", "the cooperation agreement's reference (--agreement-ref)"),
            ("agreement_date", "the date it was concluded (--agreement-date)"),
            ("secrecy_conditions", "its professional-secrecy conditions (--secrecy-conditions)"),
        )
        if not values[name]
    ]
    if missing:
        raise InputError(f"a referral protocol needs {', '.join(missing)}")
    if not values["consent_required"]:
        raise InputError(
            "a referral protocol always requires the family's consent: a referral is an offer of help the "
            "family agreed to; leave out --no-consent-required"
        )
    if values["valid_until"] and values["agreement_date"] > values["valid_until"]:
        raise InputError("the cooperation agreement's date lies after the protocol's valid-until")


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
    if action == "return" and not (reason or "").strip():
        raise InputError(f"returning protocol {protocol.id} to draft needs a reason (--reason): say what must be corrected")
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


def amend(session: Session, protocol_id: int, changes: dict[str, Any], *, actor: audit.Actor) -> list[str]:
    """Correct fields of a ``draft`` protocol; returns the names of the fields that changed.

    The amended protocol is checked as a whole by the rules of :func:`create`. A protocol past
    draft is refused (:class:`IllegalTransition`): return it first. The audit fact and the
    protocol's history name the changed fields, never their values: some are personal (a DPO's
    address) or confidential (a college decision not yet public), and one rule for every field
    is one an auditor can check. The current values are in the registry (``protocol show``).
    Changing nothing records nothing.
    """
    fixed = sorted(set(changes) & set(FIXED_FIELDS))
    if fixed:
        raise InputError(
            f"{', '.join(fixed)} of protocol {protocol_id} cannot be amended: they make it what it is (its DAG and "
            "directories); revoke this draft and create a new protocol"
        )
    unknown = sorted(set(changes) - set(AMENDABLE_FIELDS))
    if unknown:
        raise InputError(f"unknown protocol field(s) {', '.join(unknown)}; amendable: {', '.join(AMENDABLE_FIELDS)}")
    protocol = get(session, protocol_id)
    if protocol.status not in AMENDABLE_STATUSES:
        hint = (
            f"return it to draft first (`welfare-exchange protocol return {protocol.id} --reason …`), then amend, "
            "submit and advise it again"
            if protocol.status in TRANSITIONS["return"][0]
            else "it can no longer change; a new agreement is a new protocol"
        )
        raise IllegalTransition(f"cannot amend protocol {protocol.id}: it is {protocol.status}, only a draft can be amended; {hint}")
    current = {name: getattr(protocol, name) for name in PROTOCOL_FIELDS}
    merged = {**current, **changes}
    if protocol.kind == "method2" and "reference_date" not in changes:
        merged["reference_date"] = DEFAULT_REFERENCE_DATE  # follows the (possibly amended) offer
    checked = _validated(merged)
    changed = [name for name in AMENDABLE_FIELDS if checked[name] != current[name]]
    if not changed:
        return []
    for name in changed:
        setattr(protocol, name, checked[name])
    names = ", ".join(changed)
    session.add(
        ProtocolTransition(protocol_id=protocol.id, from_status=protocol.status, to_status=protocol.status,
                           actor=actor.name, reason=f"amended: {names}")
    )
    audit.record(
        session,
        "protocol.amend",
        actor=actor,
        protocol=protocol,
        message=f"protocol {protocol.id} amended while {protocol.status}: {names} changed (values are in the registry)",
    )
    session.flush()
    return changed


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
