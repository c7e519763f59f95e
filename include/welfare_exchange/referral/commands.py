"""``welfare-exchange referral …``: the referral source, and the operator's view of referrals.

Building, delivering and receiving files run in the referral DAG (orchestration layer); these
commands import and generate candidates, show what a run would select (counts), make the
feedback template, check a feedback file without recording it, and show the evaluation and the
referrals awaiting feedback. Nothing here prints a name, an INSZ or a contact detail.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import pathlib

import sqlalchemy as sa

from welfare_exchange import audit
from welfare_exchange.cliutil import add_password_arguments, iso_date, read_password
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Referral
from welfare_exchange.errors import InputError
from welfare_exchange.protocols import check_gate, get
from welfare_exchange.referral import candidates, evaluation, feedback, generator, selection
from welfare_exchange.staging import atomic_write


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("referral", help="referral of families to their Sociaal Huis (structurele toeleiding)")
    commands = parser.add_subparsers(dest="referral_command", required=True, metavar="ACTION")

    sub = commands.add_parser("import", help="import Kind en Gezin's referral candidates (CSV); refused whole on a bad line")
    sub.add_argument("file", type=pathlib.Path, metavar="FILE")
    sub.add_argument("--today", type=iso_date, help="the import day consent dates may not follow (default: today)")
    sub.set_defaults(handler=_import)

    sub = commands.add_parser("generate", help="write synthetic candidates consistent with the loaded entitlement store")
    sub.add_argument("--out", type=pathlib.Path, required=True, metavar="FILE")
    sub.add_argument("--seed", type=int, default=1)
    sub.add_argument("--born-from", type=iso_date, help="first birth date (default: 24 months before the store's last)")
    sub.add_argument("--born-until", type=iso_date, help="last birth date (default: the store's last)")
    sub.add_argument("--nis", action="append", help="only children domiciled here (repeatable)")
    sub.set_defaults(handler=_generate)

    sub = commands.add_parser("select", help="dry run: how many families a referral list would carry, and why not others")
    sub.add_argument("--protocol", type=int, required=True, metavar="ID")
    sub.add_argument("--on", type=iso_date, help="run date (default: today)")
    sub.add_argument("--json", action="store_true")
    sub.set_defaults(handler=_select)

    sub = commands.add_parser("feedback-template", help="the workbook a Sociaal Huis fills in to report back")
    sub.add_argument("--out", type=pathlib.Path, required=True, metavar="FILE.xlsx")
    sub.add_argument("--protocol", type=int, metavar="ID", help="pre-fill the referral ids sent under this protocol")
    sub.add_argument("--list", type=int, metavar="EXCHANGE", help="only those of this referral list")
    sub.set_defaults(handler=_template)

    sub = commands.add_parser("check-feedback", help="validate a Sociaal Huis's feedback file without recording it")
    sub.add_argument("file", type=pathlib.Path, metavar="FILE")
    sub.add_argument("--protocol", type=int, required=True, metavar="ID")
    add_password_arguments(sub, "password agreed between the DPOs")
    sub.add_argument("--on", type=iso_date, help="processing date (default: today)")
    sub.set_defaults(handler=_check_feedback)

    sub = commands.add_parser("evaluation", help="the agency's evaluation report of an agreement (suppressed counts)")
    sub.add_argument("--protocol", type=int, required=True, metavar="ID")
    sub.add_argument("--until", type=iso_date, help="referrals sent up to this day (default: today)")
    sub.add_argument("--out", type=pathlib.Path, metavar="FILE", help="write the report here instead of printing it")
    sub.set_defaults(handler=_evaluation)

    sub = commands.add_parser("awaiting", help="referrals without feedback after the term (WELFARE_EXCHANGE_REFERRAL_FEEDBACK_DAYS)")
    sub.add_argument("--protocol", type=int, required=True, metavar="ID")
    sub.add_argument("--on", type=iso_date, help="as of this day (default: today)")
    sub.add_argument("--json", action="store_true")
    sub.set_defaults(handler=_awaiting)


def _read(path: pathlib.Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the {what} {path}: {exc.strerror}") from None


def _import(args: argparse.Namespace) -> int:
    data = _read(args.file, "candidate file")
    actor = audit.Actor.current_user()
    try:
        with session_scope() as session:
            summary = candidates.import_candidates(session, data, today=args.today or dt.date.today(), actor=actor)
    except InputError as err:
        with session_scope() as session:  # the refusal is a fact too, outside the rolled-back transaction
            candidates.record_refusal(session, data, err, actor=actor)
        raise
    if summary.already_imported:
        print(f"{args.file.name} was imported before (same SHA-256): nothing changed")
        return 0
    print(", ".join(f"{key.replace('_', ' ')} {value}" for key, value in summary.counts().items()))
    return 0


def _generate(args: argparse.Namespace) -> int:
    with session_scope() as session:
        data, stats = generator.generate_candidates(
            session, seed=args.seed, born_from=args.born_from, born_until=args.born_until, nis_codes=args.nis
        )
    atomic_write(args.out, data)
    print(", ".join(f"{key.replace('_', ' ')} {value}" for key, value in stats.items()) + f": {args.out}")
    return 0


def _select(args: argparse.Namespace) -> int:
    on = args.on or dt.date.today()
    with session_scope() as session:
        protocol = get(session, args.protocol)
        counts = selection.selection_counts(session, protocol, on)
        gate = check_gate(protocol, on, kind="referral")
    data = {**dataclasses.asdict(counts), "gate": gate.state}
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(
            f"in {protocol.municipality} (NIS {protocol.nis_code}) on {on.isoformat()}: {counts.in_municipality} candidates, "
            f"{counts.kansarmoede} in kansarmoede; left out: {counts.no_consent} without recorded consent, "
            f"{counts.withdrawn} withdrawn, {counts.already_referred} already referred; selected {counts.selected}"
            f" (gate {gate.state}: {gate.reason})"
        )
    return 0


def _template(args: argparse.Namespace) -> int:
    codes: list[str] = []
    protocol = None
    with session_scope() as session:
        if args.protocol is not None:
            protocol = get(session, args.protocol)
            query = sa.select(Referral.code).where(Referral.protocol_id == protocol.id, Referral.sent_at.is_not(None))
            if args.list is not None:
                query = query.where(Referral.exchange_id == args.list)
            codes = list(session.scalars(query.order_by(Referral.id)))
        elif args.list is not None:
            raise InputError("--list needs --protocol")
        data = feedback.feedback_template(protocol, codes, on=dt.date.today())
    atomic_write(args.out, data)
    print(f"feedback template with {len(codes)} referral id(s): {args.out}")
    return 0


def _check_feedback(args: argparse.Namespace) -> int:
    data = _read(args.file, "feedback file")
    password = read_password(args)
    on = args.on or dt.date.today()
    with session_scope() as session:
        protocol = get(session, args.protocol)
        outcome = feedback.read_feedback(data, password, sent=feedback.sent_referrals(session, protocol), on=on)
    per_outcome = {key: sum(r.outcome == key for r in outcome.rows) for key in feedback.OUTCOMES}
    print(
        f"feedback file valid: {len(outcome.rows)} referral(s), {len(outcome.duplicate_lines)} repeated row(s); "
        + ", ".join(f"{label} {per_outcome[key]}" for key, label in feedback.OUTCOMES.items())
        + " (nothing recorded: the referral DAG records feedback it receives)"
    )
    return 0


def _evaluation(args: argparse.Namespace) -> int:
    until = args.until or dt.date.today()
    with session_scope() as session:
        protocol = get(session, args.protocol)
        report = evaluation.evaluation_report(session, protocol, until)
    if args.out:
        atomic_write(args.out, report)
        print(f"evaluation report: {args.out}")
    else:
        print(report.decode("utf-8"), end="")
    return 0


def _awaiting(args: argparse.Namespace) -> int:
    on = args.on or dt.date.today()
    with session_scope() as session:
        protocol = get(session, args.protocol)
        waiting = evaluation.awaiting_feedback(session, protocol, on)
    if args.json:
        print(json.dumps([{"referral_id": w.code, "sent_on": w.sent_on.isoformat(), "days": w.days} for w in waiting], indent=2))
        return 0
    print(f"{len(waiting)} referral(s) of protocol {protocol.id} without feedback after the term on {on.isoformat()}")
    for w in waiting:
        print(f"  {w.code}  sent {w.sent_on.isoformat()}  waiting {w.days} days")
    return 0
