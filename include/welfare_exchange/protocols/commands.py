"""``welfare-exchange protocol …``: register protocols and move them through their lifecycle."""

from __future__ import annotations

import argparse
import json
import pathlib

from welfare_exchange import audit
from welfare_exchange.cliutil import iso_date
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Protocol
from welfare_exchange.errors import IllegalTransition, InputError
from welfare_exchange.protocols import registry

_LIFECYCLE_HELP = {
    "submit": "the municipality submits the completed protocol",
    "return": "send a submitted protocol back to draft for changes",
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
    create.add_argument("--municipality", help="name (default: looked up from the NIS code)")
    create.add_argument("--kind", required=True, choices=registry.KINDS)
    create.add_argument("--channel", required=True, choices=registry.CHANNELS)
    create.add_argument("--key-connection", required=True, help="Airflow connection holding the file password")
    create.add_argument("--channel-connection", help="Airflow connection of the channel (default sftp_<NIS>/smime_<NIS>)")
    create.add_argument("--legal-basis")
    create.add_argument("--purpose")
    create.add_argument("--fields", help=f"comma-separated result fields, among {','.join(registry.ALLOWED_RESULT_FIELDS)}")
    create.add_argument("--reference-date", type=iso_date, default=registry.DEFAULT_REFERENCE_DATE)
    create.add_argument("--supplements", default="sociale_toeslag", help="comma-separated supplements in scope")
    create.add_argument("--age-min", type=int, default=0)
    create.add_argument("--age-max", type=int, default=25)
    create.add_argument("--request-retention-days", type=int, default=30)
    create.add_argument("--result-retention-days", type=int, default=90)
    create.add_argument("--delete-request-after-match", action="store_true")
    create.add_argument("--valid-from", type=iso_date)
    create.add_argument("--valid-until", type=iso_date)
    create.add_argument("--college-decision-ref")
    create.add_argument("--college-decision-date", type=iso_date)
    create.add_argument("--dpo-advice-date", type=iso_date)
    create.add_argument("--sender-address", help="e-mail address the municipality sends from (smime)")
    create.add_argument(
        "--sender-certificate", type=pathlib.Path, action="append", default=[], metavar="FILE",
        help="the municipality's S/MIME certificate (PEM or DER) exchanged between the DPOs (smime); "
        "repeat for a renewal kept next to the old one",
    )
    create.add_argument(
        "--require-signature", action="store_true",
        help="refuse request e-mails that are not S/MIME-signed with a registered certificate (smime)",
    )
    create.add_argument("--schedule", help="cron or preset for the exchange DAG (default: manual)")
    create.add_argument("--offer-file", type=pathlib.Path, help="JSON file with the municipality's offer (method2)")
    create.set_defaults(handler=_create)

    for action, text in _LIFECYCLE_HELP.items():
        sub = commands.add_parser(action, help=text)
        sub.add_argument("id", type=int)
        sub.add_argument("--reason")
        sub.set_defaults(handler=_transition, action=action)

    show = commands.add_parser("show", help="one protocol and its history")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)

    listing = commands.add_parser("list", help="all protocols")
    listing.add_argument("--status", choices=registry.STATUSES)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)


def _csv(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _municipality_name(nis: str) -> str:
    try:
        from welfare_exchange.entitlements.municipalities import by_nis
    except ImportError:
        return f"NIS {nis}"
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


def _create(args: argparse.Namespace) -> int:
    offer = None
    if args.offer_file is not None:
        try:
            offer = json.loads(args.offer_file.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the offer file {args.offer_file}: {exc}") from None
    certificates = [_certificate_pem(path) for path in args.sender_certificate]
    if args.channel == "smime" and (not args.sender_address or not certificates):
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
    except IllegalTransition as exc:
        # The refusal is a fact too; it is recorded outside the rolled-back transaction.
        with session_scope() as session:
            audit.record(session, f"protocol.{args.action}", "refused", actor=actor, protocol_id=args.id, message=str(exc))
        raise
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
    else:
        for r in rows:
            print(f"{r['id']:>5}  {r['nis_code']}  {r['municipality']:<28} {r['kind']:<10} {r['channel']:<5} {r['status']:<9} "
                  f"{r['valid_from'] or '-'} .. {r['valid_until'] or '-'}")
    return 0
