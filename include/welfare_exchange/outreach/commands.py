"""``welfare-exchange outreach …``: the mail room's letters, a campaign's progress, its uncertain messages."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import pathlib

from welfare_exchange import audit, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.errors import InputError
from welfare_exchange.outreach import outbox, resolution, steps
from welfare_exchange.transport.mail import MailTransportError
from welfare_exchange.protocols import get
from welfare_exchange.staging import Staging


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("outreach", help="Method 2 campaigns: letters for the mail room, progress")
    commands = parser.add_subparsers(dest="outreach_command", required=True, metavar="ACTION")

    letters = commands.add_parser("letters", help="write a campaign's letter PDFs for printing (audited)")
    letters.add_argument("campaign", type=int, help="the campaign's exchange id (the DAG's open_campaign result)")
    letters.add_argument("--out", type=pathlib.Path, required=True, help="the mail room's folder (created 0700)")
    letters.set_defaults(handler=_letters)

    status = commands.add_parser("status", help="a campaign's counts: selected, sent, letters, bounced, uncertain")
    status.add_argument("campaign", type=int)
    status.set_defaults(handler=_status)

    report = commands.add_parser(
        "report", help="deliver the municipality an updated report (next version) when resolutions changed its figures"
    )
    report.add_argument("campaign", type=int)
    report.set_defaults(handler=_report)

    uncertain = commands.add_parser(
        "uncertain", help="messages whose delivery a crash left uncertain: list them, resolve them (audited)"
    )
    uncertain_commands = uncertain.add_subparsers(dest="uncertain_command", required=True, metavar="ACTION")
    listing = uncertain_commands.add_parser("list", help="a campaign's uncertain messages by outbox id and Message-ID")
    listing.add_argument("campaign", type=int)
    listing.add_argument("--all", action="store_true", help="also the resolved ones")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_uncertain_list)
    resolve = uncertain_commands.add_parser(
        "resolve", help="after checking the SMTP server's log or queue: mark as sent, or send once more"
    )
    resolve.add_argument("campaign", type=int)
    resolve.add_argument("--outbox-id", type=int, action="append", default=[], metavar="N", help="repeatable")
    resolve.add_argument("--message-id", action="append", default=[], metavar="ID", help="repeatable")
    resolve.add_argument("--all", action="store_true", help="every unresolved uncertain message of the campaign")
    resolve.add_argument(
        "--as", dest="decision", required=True, choices=resolution.DECISIONS,
        help="sent: the SMTP log or queue shows it accepted; resend: send the same message (same Message-ID) once more",
    )
    resolve.add_argument("--reason", required=True, help="what the log showed (audited; never personal data)")
    resolve.set_defaults(handler=_uncertain_resolve)


def _letters(args: argparse.Namespace) -> int:
    with session_scope() as session:
        exchange = ledger.get_exchange(session, args.campaign)
        protocol = get(session, exchange.protocol_id)
        if protocol.kind != "method2":
            raise InputError(f"exchange {args.campaign} is not a Method 2 campaign")
    staging = Staging(protocol.id, exchange.id)
    names = sorted(n[: -len(".fernet")] for n in staging.names() if n.startswith("letters-") and n.endswith(".pdf.fernet"))
    if not names:
        raise InputError(f"campaign {args.campaign} has no letters (none rendered yet, or deleted by retention)")
    args.out.mkdir(mode=0o700, parents=True, exist_ok=True)
    hashes = {}
    for name in names:
        data = staging.read_encrypted(name)
        target = args.out / f"campagne-{exchange.id}-{name}"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        hashes[name] = hashlib.sha256(data).hexdigest()
        print(target)
    with session_scope() as session:
        audit.record(
            session, "letters.exported", actor=audit.Actor.current_user(), protocol=protocol, exchange_id=exchange.id,
            file_hashes=hashes, counts={"pdfs": len(hashes)},
            message=f"{len(hashes)} letter PDF(s) of campaign {exchange.id} written for the mail room; "
            "delete them once printed",
        )
    return 0


def _status(args: argparse.Namespace) -> int:
    with session_scope() as session:
        exchange = ledger.get_exchange(session, args.campaign)
        counts = {"state": exchange.state, **(exchange.counts or {}), "outbox": outbox.outcome_counts(session, exchange.id)}
    print(json.dumps(counts, indent=2, sort_keys=True, default=str))
    return 0


def _report(args: argparse.Namespace) -> int:
    done = steps.update_report(args.campaign, actor=audit.Actor.current_user())
    if done.get("unchanged"):
        print(f"campaign {args.campaign}: the report's figures are unchanged since version {done['revision']}; nothing sent")
    else:
        print(f"campaign {args.campaign}: report version {done['revision']} delivered ({done['name']})")
    return 0


def _uncertain_list(args: argparse.Namespace) -> int:
    with session_scope() as session:
        ledger.get_exchange(session, args.campaign)
        messages = resolution.uncertain_messages(session, args.campaign)
    shown = [m for m in messages if args.all or not m.resolved]
    if args.json:
        print(json.dumps([m.as_dict() for m in shown], indent=2))
        return 0
    line = "{:>9}  {:<60}  {:<25}  {}"
    print(line.format("outbox id", "Message-ID", "first attempt (UTC)", "status"))
    for m in shown:
        began = m.began_at.astimezone(dt.timezone.utc) if m.began_at.tzinfo else m.began_at
        print(line.format(m.outbox_id, m.message_id or "-", began.strftime("%Y-%m-%d %H:%M:%S"),
                          resolution.STATUS_TEXT[m.status] + (f" ({m.decided_by})" if m.decided_by else "")))
    unresolved = sum(1 for m in messages if not m.resolved)
    print(f"{unresolved} unresolved, {len(messages) - unresolved} resolved of {len(messages)} uncertain message(s)")
    return 0


def _uncertain_resolve(args: argparse.Namespace) -> int:
    done = resolution.resolve(
        args.campaign, args.decision, actor=audit.Actor.current_user(), reason=args.reason,
        outbox_ids=args.outbox_id, message_ids=args.message_id, every=args.all,
    )
    for item in done:
        print(f"outbox {item.outbox_id} {item.message_id or '-'}: {item.note}")
    if not done:
        print(f"campaign {args.campaign}: no unresolved uncertain message")
    elif any(item.changed for item in done):
        print(f"when the campaign's uncertain messages are resolved: `welfare-exchange outreach report {args.campaign}` "
              "gives the municipality its updated figures")
    not_taken = [item for item in done if item.not_taken]
    if not_taken:
        raise MailTransportError(
            f"campaign {args.campaign}: {len(not_taken)} resend(s) not taken by the SMTP server; nothing was sent "
            "twice: run the same command again once the server takes mail"
        )
    return 0
