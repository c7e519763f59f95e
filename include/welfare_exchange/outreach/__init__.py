"""Method 2: the agency contacts the families for the municipality (*outreach*).

The municipality receives no personal data. Under a ``method2`` protocol the agency selects the
families in the municipality with a *sociale toeslag* (the social supplement, the child-poverty
criterion) on the offer's reference date and sends each family's *begunstigde* (beneficiary, the
parent who is paid) the municipality's offer; the family decides itself whether to apply. The
municipality only gets counts, small ones suppressed.

One run of the Method 2 DAG is one *campaign*, an :class:`~welfare_exchange.db.models.Exchange`
in the ledger. Modules:

* :mod:`~welfare_exchange.protocols.offer` (beside the registry) — the offer's JSON shape,
  validated when the protocol is created;
* :mod:`~welfare_exchange.outreach.selection` — the families, one set-based query;
* :mod:`~welfare_exchange.outreach.templates` — the Dutch e-mail and letter texts;
* :mod:`~welfare_exchange.outreach.letters` — printable PDF letters, batched for the mail room;
* :mod:`~welfare_exchange.outreach.smtp` — one SMTP session, each send's outcome classified
  (sent, bounced, not sent, uncertain);
* :mod:`~welfare_exchange.outreach.outbox` — the idempotent outbox: at most one message per
  family per campaign, throttled and resumable;
* :mod:`~welfare_exchange.outreach.report` — the municipality's counts-only report;
* :mod:`~welfare_exchange.outreach.steps` — the steps the DAG's tasks call.
"""
