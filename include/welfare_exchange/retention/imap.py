"""Delete a request message from the agency's IMAP mailbox when its retention ends.

The S/MIME channel records messages as ``"<imap conn id>:<mailbox>:<Message-ID or uid-<hex>>"``
(``Processed`` for taken requests, ``Rejected`` for refused ones). A message is found by its
Message-ID (stable across UIDVALIDITY changes) or, without one, by UID; it is flagged
``\\Deleted`` and expunged. Not found = already gone.
"""

from __future__ import annotations

from welfare_exchange.transport import mail


def split_location(location: str) -> tuple[str, str, str]:
    """``"<conn>:<mailbox>:<ref>"`` → ``(conn, mailbox, ref)``; the reference may hold colons."""
    conn_id, mailbox, ref = (location.split(":", 2) + ["", ""])[:3]
    if not conn_id or not mailbox or not ref:
        raise ValueError(f"IMAP retention location must be '<connection id>:<mailbox>:<message ref>', got {location!r}")
    return conn_id, mailbox, ref


def delete_message(location: str) -> bool:
    """Delete the message at ``location``; False when it is no longer there.

    :raises welfare_exchange.transport.mail.MailTransportError: the server is unreachable or
        refuses: the item stays due and the retention run fails (and retries).
    """
    conn_id, mailbox, ref = split_location(location)
    with mail._imap_client(conn_id, None) as client:
        status, _ = client.select(mail._quote(mailbox), readonly=False)
        if status != "OK":  # the folder was never created: nothing of ours is in it
            return False
        if ref.startswith("uid-"):
            found = mail._check(client.uid("SEARCH", None, "UID", str(int(ref[4:], 16))), "search the mailbox")
        else:
            found = mail._check(client.uid("SEARCH", None, "HEADER", "Message-ID", f'"{ref}"'), "search the mailbox")
        uids = sorted({int(u) for u in (found[0] or b"").split()})
        if not uids:
            return False
        uid_set = ",".join(map(str, uids))
        mail._check(client.uid("STORE", uid_set, "+FLAGS.SILENT", r"(\Deleted)"), "flag the message deleted")
        capabilities = {c.upper() for c in getattr(client, "capabilities", ())}
        if "UIDPLUS" in capabilities:
            mail._check(client.uid("EXPUNGE", uid_set), "expunge the message")
        else:
            mail._check(client.expunge(), "expunge the message")
    return True
