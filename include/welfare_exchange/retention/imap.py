"""Delete a request message from the agency's IMAP mailbox when its retention ends — the right one.

The S/MIME channel records each message it keeps as ``"<imap conn id>:<mailbox>:<SHA-256>"``
with the SHA-256 of the raw message (taken when it was downloaded) and, as a hint, the UID the
server gave it in that folder (its ``COPYUID`` answer to the move). A message is deleted only
after its content is hashed and matches: the recorded folder is searched first (the hinted UID,
then every message of that size), then the channel's other folders (a person may have moved it).
A UID alone never decides — UIDs are per folder, and requests sent with the OpenSSL command line
carry no Message-ID — so another municipality's message is never taken for ours.
"""

from __future__ import annotations

from collections.abc import Callable

from welfare_exchange.transport import mail

#: Where the channel keeps messages; a copy not in its recorded folder is looked for in the others.
FOLDERS = (mail.PROCESSED_MAILBOX, mail.REJECTED_MAILBOX)


def split_location(location: str) -> tuple[str, str]:
    """``"<conn>:<mailbox>:<reference>"`` → ``(conn, mailbox)``."""
    conn_id, mailbox, ref = (location.split(":", 2) + ["", ""])[:3]
    if not conn_id or not mailbox or not ref:
        raise ValueError("an IMAP retention location must be '<connection id>:<mailbox>:<message reference>'")
    return conn_id, mailbox


def delete_message(
    location: str, *, sha256: str, size: int | None = None, uidvalidity: int | None = None,
    uid: int | None = None, before_delete: Callable[[str], None] | None = None,
) -> str | None:
    """Delete the message whose raw content has ``sha256``; what was verified, or ``None`` when
    no folder holds it (the caller reports it missing).

    :param before_delete: called with the verification text just before the expunge.
    :raises welfare_exchange.transport.mail.MailTransportError: the server is unreachable or
        refuses: the item stays due and the retention run fails (and retries).
    """
    conn_id, mailbox = split_location(location)
    with mail._imap_client(conn_id, None) as client:
        for folder in (mailbox, *(f for f in FOLDERS if f != mailbox)):
            hint = {"uidvalidity": uidvalidity, "uid": uid} if folder == mailbox else {}
            found = mail.find_message(client, folder, sha256=sha256, size=size, readonly=False, **hint)
            if found is None:
                continue
            verified = f"{found.describe()} matched (connection {conn_id!r})"
            if before_delete is not None:
                before_delete(verified)
            mail.delete_found(client, found)
            return verified
    return None
