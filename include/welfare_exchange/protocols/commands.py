"""``welfare-exchange protocol …``: register protocols and move them through their lifecycle."""

from __future__ import annotations

import argparse
import json
import pathlib

from welfare_exchange import audit
from welfare_exchange.protocols.channels import names as channel_names
from welfare_exchange.protocols.channels import needs_sender_identity
from welfare_exchange.cliutil import iso_date
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Protocol
from welfare_exchange.errors import IllegalTransition, InputError, ProtocolError
from welfare_exchange.municipalities import by_nis
from welfare_exchange.protocols import registry

_LIFECYCLE_HELP = {
    "submit": "the municipality submits the completed protocol",
    "return": "send a submitted or advised protocol back to draft for corrections (--reason required)",
    "advise": "the agency's DPO advises on the protocol",
    "sign": "sign: data may flow from the validity start",
    "suspend": "stop all exchanges until resumed",
    "resume": "lift a suspension",
    "revoke": "end the protocol for good; pending exchanges stop",
    "expire": "mark the protocol expired",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("protocol", help="data-exchange protocols")
    commands = parser.add_subparsers(dest="protocol_command", required=True, metavar="ACTION")

    create = commands.add_parser("create", help="register a new protocol (draft); prints its id")
    create.add_argument("--nis", required=True, help="5-digit NIS code of the municipality")
    create.add_argument("--kind", required=True, choices=registry.KINDS)
    create.add_argument("--channel", required=True, choices=channel_names())
    _field_options(create, amend=False)
    create.set_defaults(handler=_create)

    for action, text in _LIFECYCLE_HELP.items():
        sub = commands.add_parser(action, help=text)
        sub.add_argument("id", type=int)
        sub.add_argument("--reason", required=action == "return", help="why (audited; never personal data)")
        sub.set_defaults(handler=_transition, action=action)

    amend = commands.add_parser(
        "amend", help="correct fields of a draft protocol (return it to draft first); audited by field name"
    )
    amend.add_argument("id", type=int)
    _field_options(amend, amend=True)
    amend.set_defaults(handler=_amend)

    show = commands.add_parser("show", help="one protocol and its history")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)

    listing = commands.add_parser("list", help="all protocols")
    listing.add_argument("--status", choices=registry.STATUSES)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)


def _field_options(parser: argparse.ArgumentParser, *, amend: bool) -> None:
    """The protocol's fields as options, shared by ``create`` and ``amend``.

    For ``amend`` no option has a default: only the options given appear in the arguments,
    and only those fields change.
    """

    def default(value):
        return argparse.SUPPRESS if amend else value

    parser.add_argument("--municipality", default=default(None), help="name (default: looked up from the NIS code)")
    parser.add_argument("--key-connection", required=not amend, default=default(None),
                        help="Airflow connection holding the file password")
    parser.add_argument("--channel-connection", default=default(None),
                        help="Airflow connection of the channel (default sftp_<NIS>/smime_<NIS>)")
    parser.add_argument("--legal-basis", default=default(None))
    parser.add_argument("--purpose", default=default(None))
    parser.add_argument("--fields", default=default(None),
                        help=f"comma-separated result fields, among {','.join(registry.ALLOWED_RESULT_FIELDS)}; for a "
                        f"referral protocol among {','.join(registry.REFERRAL_FIELDS)} (default: all)")
    parser.add_argument("--reference-date", type=iso_date, default=default(registry.DEFAULT_REFERENCE_DATE))
    parser.add_argument("--supplements", default=default("sociale_toeslag"), help="comma-separated supplements in scope")
    parser.add_argument("--age-min", type=int, default=default(0))
    parser.add_argument("--age-max", type=int, default=default(25))
    parser.add_argument("--request-retention-days", type=int, default=default(30))
    parser.add_argument("--result-retention-days", type=int, default=default(90))
    parser.add_argument("--delete-request-after-match", action=argparse.BooleanOptionalAction, default=default(False))
    parser.add_argument("--valid-from", type=iso_date, default=default(None))
    parser.add_argument("--valid-until", type=iso_date, default=default(None))
    parser.add_argument("--college-decision-ref", default=default(None))
    parser.add_argument("--college-decision-date", type=iso_date, default=default(None))
    parser.add_argument("--dpo-advice-date", type=iso_date, default=default(None))
    parser.add_argument("--sender-address", default=default(None), help="e-mail address the municipality sends from (smime)")
    parser.add_argument(
        "--sender-certificate", type=pathlib.Path, action="append", default=default([]), metavar="FILE",
        help="the municipality's S/MIME certificate (PEM or DER) exchanged between the DPOs (smime); "
        "repeat for a renewal kept next to the old one" + ("; replaces the registered ones" if amend else ""),
    )
    parser.add_argument(
        "--require-signature", action=argparse.BooleanOptionalAction, default=default(False),
        help="refuse request e-mails that are not S/MIME-signed with a registered certificate (smime)",
    )
    parser.add_argument("--schedule", default=default(None), help="cron or preset for the exchange DAG (default: manual)")
    parser.add_argument("--offer-file", type=pathlib.Path, default=default(None),
                        help="JSON file with the municipality's offer (method2)")
    parser.add_argument("--agreement-ref", default=default(None),
                        help="reference of the cooperation agreement (samenwerkingsovereenkomst) with the Sociaal Huis (referral)")
    parser.add_argument("--agreement-date", type=iso_date, default=default(None),
                        help="the date the cooperation agreement was concluded (referral)")
    parser.add_argument("--secrecy-conditions", default=default(None),
                        help="reference to the agreement's professional-secrecy conditions, e.g. its article (referral)")
    parser.add_argument("--consent-required", action=argparse.BooleanOptionalAction, default=default(None),
                        help="the family's consent is required (referral: always; refused when switched off)")


#: ``amend`` option (argparse destination) → protocol attribute, where they differ.
_OPTION_FIELDS = {"fields": "allowed_fields", "sender_certificate": "sender_certificates", "offer_file": "offer"}


def _csv(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _municipality_name(nis: str) -> str:
    try:
        return by_nis(nis).name
    except (KeyError, LookupError):
        raise InputError(f"unknown NIS code {nis}: give --municipality or a code of a Flemish municipality") from None


def _certificate_pem(path: pathlib.Path) -> str:
    """A certificate file (PEM or DER) as PEM text, the form the protocol stores."""
    from cryptography.hazmat.primitives import serialization

    from welfare_exchange.transport import smime

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the sender certificate {path}: {exc.strerror}") from None
    try:
        certificate = smime.load_certificate(data)
    except smime.SmimeError:
        raise InputError(f"{path} is not an X.509 certificate (PEM or DER): ask the municipality's DPO for it again") from None
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _offer(path: pathlib.Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the offer file {path}: {exc}") from None


def _create(args: argparse.Namespace) -> int:
    offer = _offer(args.offer_file)
    certificates = [_certificate_pem(path) for path in args.sender_certificate]
    if needs_sender_identity(args.channel) and (not args.sender_address or not certificates):
        raise InputError(
            "an e-mail (smime) protocol needs the municipality's sender address (--sender-address) and the "
            "certificate its DPO exchanged with the agency's (--sender-certificate FILE): requests are tied to "
            "both, and results are encrypted to the certificate"
        )
    with session_scope() as session:
        protocol = registry.create(
            session,
            nis_code=args.nis,
            municipality=args.municipality or _municipality_name(args.nis),
            kind=args.kind,
            channel=args.channel,
            key_connection=args.key_connection,
            channel_connection=args.channel_connection,
            legal_basis=args.legal_basis,
            purpose=args.purpose,
            allowed_fields=_csv(args.fields),
            reference_date=args.reference_date,
            supplements=_csv(args.supplements),
            age_min=args.age_min,
            age_max=args.age_max,
            request_retention_days=args.request_retention_days,
            result_retention_days=args.result_retention_days,
            delete_request_after_match=args.delete_request_after_match,
            valid_from=args.valid_from,
            valid_until=args.valid_until,
            college_decision_ref=args.college_decision_ref,
            college_decision_date=args.college_decision_date,
            dpo_advice_date=args.dpo_advice_date,
            sender_address=args.sender_address,
            sender_certificates=certificates,
            require_signature=args.require_signature,
            schedule=args.schedule,
            offer=offer,
            agreement_ref=args.agreement_ref,
            agreement_date=args.agreement_date,
            secrecy_conditions=args.secrecy_conditions,
            consent_required=args.consent_required,
            actor=audit.Actor.current_user(),
        )
        registry.write_snapshot(session)
        print(protocol.id)
    return 0


def _transition(args: argparse.Namespace) -> int:
    actor = audit.Actor.current_user()
    try:
        with session_scope() as session:
            protocol = registry.transition(session, args.id, args.action, actor=actor, reason=args.reason)
            registry.write_snapshot(session)
            print(f"protocol {protocol.id}: {protocol.status}")
    except ProtocolError as exc:  # an illegal transition, or a signature without its references
        # The refusal is a fact too; it is recorded outside the rolled-back transaction.
        with session_scope() as session:
            audit.record(session, f"protocol.{args.action}", "refused", actor=actor, protocol_id=args.id, message=str(exc))
        raise
    return 0


def _amend(args: argparse.Namespace) -> int:
    changes = {}
    for option, value in vars(args).items():
        if option in ("command", "protocol_command", "handler", "id"):
            continue
        if option in ("fields", "supplements"):
            value = _csv(value) or []
        elif option == "sender_certificate":
            value = [_certificate_pem(path) for path in value]
        elif option == "offer_file":
            value = _offer(value)
        elif isinstance(value, str):
            value = value.strip() or None  # an empty text clears an optional field (e.g. --schedule "")
        changes[_OPTION_FIELDS.get(option, option)] = value
    if not changes:
        raise InputError(f"nothing to amend on protocol {args.id}: give the fields to correct (see `protocol amend --help`)")
    actor = audit.Actor.current_user()
    try:
        with session_scope() as session:
            changed = registry.amend(session, args.id, changes, actor=actor)
            registry.write_snapshot(session)
    except IllegalTransition as exc:
        with session_scope() as session:
            audit.record(session, "protocol.amend", "refused", actor=actor, protocol_id=args.id, message=str(exc))
        raise
    print(f"protocol {args.id}: " + (f"amended ({', '.join(changed)})" if changed else "unchanged (the values were already so)"))
    return 0


def describe(protocol: Protocol) -> dict:
    """A protocol as plain data (dates as ISO text), for ``show --json`` and the UI."""
    out = {column.name: getattr(protocol, column.name) for column in Protocol.__table__.columns}
    out = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in out.items()}
    out["history"] = [
        {"from": t.from_status, "to": t.to_status, "at": t.at.isoformat(), "actor": t.actor, "reason": t.reason}
        for t in protocol.transitions
    ]
    return out


def _show(args: argparse.Namespace) -> int:
    with session_scope() as session:
        data = describe(registry.get(session, args.id))
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    history = data.pop("history")
    width = max(map(len, data))
    for key, value in data.items():
        print(f"{key:<{width}}  {value if value is not None else '-'}")
    print("history:")
    for step in history:
        print(f"  {step['at']}  {step['from'] or '-'} -> {step['to']}  by {step['actor']}" + (f"  ({step['reason']})" if step["reason"] else ""))
    return 0


def _list(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    with session_scope() as session:
        query = sa.select(Protocol).order_by(Protocol.id)
        if args.status:
            query = query.where(Protocol.status == args.status)
        rows = [
            {"id": p.id, "nis_code": p.nis_code, "municipality": p.municipality, "kind": p.kind, "channel": p.channel,
             "status": p.status, "valid_from": p.valid_from and p.valid_from.isoformat(),
             "valid_until": p.valid_until and p.valid_until.isoformat()}
            for p in session.scalars(query)
        ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    line = "{:>5}  {:<5}  {:<28} {:<10} {:<7} {:<9} {}"
    print(line.format("id", "nis", "municipality", "kind", "channel", "status", "valid"))
    for r in rows:
        print(line.format(r["id"], r["nis_code"], r["municipality"], r["kind"], r["channel"], r["status"],
                          f"{r['valid_from'] or '-'} .. {r['valid_until'] or '-'}"))
    return 0
