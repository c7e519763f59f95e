"""SMTP sink of the welfare-exchange development mail server.

Accepts every message (no relaying, no authentication: development only) and delivers it
into Maildirs that dovecot serves over IMAP:

* a recipient listed in ``MAIL_LOCAL_ADDRESSES`` (``address=user`` pairs, comma-separated,
  e.g. ``groeipakket@agency.test=agency``) gets it in that user's mailbox;
* every other recipient's copy goes to the catch-all user ``MAIL_CATCHALL_USER`` (``sink``),
  so what the agency sent to a municipality's DPO can be read back.

Maildir delivery writes in ``tmp/`` and renames into ``new/``: a reader never sees half a
message. Nothing is logged about a message beyond its size and the mailbox it went to (the
addresses and contents may be personal data).

Environment: MAIL_ROOT (/srv/mail), MAIL_SMTP_HOST (0.0.0.0), MAIL_SMTP_PORT (2525),
MAIL_LOCAL_ADDRESSES, MAIL_CATCHALL_USER (sink), MAIL_MAX_MESSAGE_BYTES (50 MiB),
MAIL_UID/MAIL_GID (owner of delivered files when the sink runs as root).
Standard library + aiosmtpd only: runs with Debian's python3-aiosmtpd.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import time
import uuid
from pathlib import Path

from aiosmtpd.smtp import SMTP

log = logging.getLogger("smtp-sink")
_USER = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def parse_local_addresses(text: str) -> dict[str, str]:
    """``"a@x=agency, b@y=agency"`` → ``{"a@x": "agency", "b@y": "agency"}`` (addresses lower-cased)."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        address, sep, user = item.partition("=")
        address, user = address.strip().lower(), user.strip()
        if not sep or "@" not in address or not _USER.match(user):
            raise ValueError(f"MAIL_LOCAL_ADDRESSES: expected address=user, got {item!r}")
        mapping[address] = user
    return mapping


def deliver(root: Path, user: str, data: bytes, owner: tuple[int, int] | None = None) -> Path:
    """Write ``data`` into ``root/user/Maildir/new`` atomically; returns the message's path."""
    if not _USER.match(user):
        raise ValueError(f"bad mailbox name {user!r}")
    maildir = root / user / "Maildir"
    for path in (root / user, maildir, maildir / "tmp", maildir / "new", maildir / "cur"):
        if not path.exists():
            path.mkdir(mode=0o700)
            if owner:
                os.chown(path, *owner)
    name = f"{time.time_ns()}.{uuid.uuid4().hex}.{socket.gethostname()}"
    tmp = maildir / "tmp" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if owner:
            os.fchown(fd, *owner)
        os.fsync(fd)
    finally:
        os.close(fd)
    target = maildir / "new" / name
    os.replace(tmp, target)
    return target


class SinkHandler:
    """aiosmtpd handler: one copy per destination mailbox."""

    def __init__(self, root: Path, local: dict[str, str], catchall: str, owner: tuple[int, int] | None) -> None:
        self.root = root
        self.local = local
        self.catchall = catchall
        self.owner = owner

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8")
        mailboxes = sorted({self.local.get(rcpt.lower(), self.catchall) for rcpt in envelope.rcpt_tos})
        for user in mailboxes:
            await asyncio.get_running_loop().run_in_executor(None, deliver, self.root, user, bytes(data), self.owner)
        log.info("accepted a message of %d bytes for mailbox(es) %s", len(data), ", ".join(mailboxes))
        return "250 Message accepted for delivery"


def _owner() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None  # files belong to the user the sink runs as (vmail in the container)
    uid, gid = os.environ.get("MAIL_UID"), os.environ.get("MAIL_GID")
    return (int(uid), int(gid)) if uid and gid else None


async def serve() -> None:
    root = Path(os.environ.get("MAIL_ROOT", "/srv/mail"))
    host = os.environ.get("MAIL_SMTP_HOST", "0.0.0.0")
    port = int(os.environ.get("MAIL_SMTP_PORT", "2525"))
    local = parse_local_addresses(os.environ.get("MAIL_LOCAL_ADDRESSES", ""))
    catchall = os.environ.get("MAIL_CATCHALL_USER", "sink")
    max_size = int(os.environ.get("MAIL_MAX_MESSAGE_BYTES", str(50 * 1024 * 1024)))
    handler = SinkHandler(root, local, catchall, _owner())
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=max_size, enable_SMTPUTF8=True, hostname="mail.welfare-exchange.test"),
        host=host,
        port=port,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("SMTP sink on %s:%d, %d local address(es), catch-all mailbox %r", host, port, len(local), catchall)
    async with server:
        await stop.wait()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s smtp-sink %(levelname)s %(message)s")
    # aiosmtpd logs every envelope address and command at INFO: keep only its warnings.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    asyncio.run(serve())


if __name__ == "__main__":
    main()
