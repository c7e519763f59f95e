"""Channels: how a municipality's files reach the agency and how the agency's files reach it.

A protocol names its channel (``Protocol.channel``). Every channel implements
:class:`~welfare_exchange.channels.base.Channel` — wait for a request, fetch it, quarantine a
refused one, deliver bytes exactly once, send a report, and locate, verify and delete a stored
copy for retention — and is looked up by name in :mod:`~welfare_exchange.channels.registry`.
Method 1, Method 2, the structural feeds and the retention run use nothing else: a new channel
is one module plus its :func:`~welfare_exchange.channels.registry.register` call
(``docs/channels.md``).

* :mod:`.sftp` — the municipality's chrooted SFTP folders (``inbox/``, ``received/``,
  ``quarantine/``, ``outbox/``);
* :mod:`.smime` — the agency's mailbox over IMAP, results over SMTP, S/MIME both ways.
"""
