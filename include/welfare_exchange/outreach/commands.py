"""``welfare-exchange outreach …``: the mail room's letters and a campaign's progress."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib

from welfare_exchange import audit, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.errors import InputError
from welfare_exchange.outreach import outbox
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


def _letters(args: argparse.Namespace) -> int:
    with session_scope() as session:
        exchange = ledger.get_exchange(session, args.campaign)
        protocol = get(session, exchange.protocol_id)
        if protocol.kind != "method2":
            raise InputError(f"exchange {args.campaign} is not a Method 2 campaign")
    staging = Staging(protocol.id, exchange.id)
    names = sorted(p.name[: -len(".fernet")] for p in staging.folder.glob("letters-*.pdf.fernet"))
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
