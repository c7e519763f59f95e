"""Structural feeds: the standing, periodic delivery of Groeipakket changes to local authorities.

A municipality with a signed ``structural`` protocol receives, every data interval (a month by
default), what the agency recorded during that interval about its children's *sociale toeslag*
(the social supplement, the child-poverty criterion): entitlements that started, ended, moved to
another *begunstigde* (the beneficiary, the parent who is paid), were interrupted or withdrawn —
also with retroactive effect, marked as such.

* :mod:`~welfare_exchange.feeds.config` — schedule, start date, deadline and snapshot policy;
* :mod:`~welfare_exchange.feeds.interval` — the data interval as Belgian calendar days;
* :mod:`~welfare_exchange.feeds.changes` — change detection, one set query per interval;
* :mod:`~welfare_exchange.feeds.workbook` — the deterministic feed workbook;
* :mod:`~welfare_exchange.feeds.steps` — what the DAG's tasks call;
* :mod:`~welfare_exchange.feeds.deadline` — the delivery deadline, its check and alert;
* :mod:`~welfare_exchange.orchestration.assets` — the entitlement-snapshot Asset.
"""
