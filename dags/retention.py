"""### Retention — daily deletion run and audit-trail pruning

Nothing an exchange leaves behind outlives its term, and every deletion is proven. Each run
works on its **logical date** (never the wall clock), so a re-run or back-fill of a day deletes
exactly what was due that day.

| task | what it does |
|---|---|
| `end_protocols` | protocols whose `valid_until` passed → `expired` (audited); pending exchanges of expired and revoked protocols are stopped, all their data due now |
| `apply_rules` | "delete the request as soon as matching is done"; deadlines past the legal maximum (`WELFARE_EXCHANGE_MAX_RETENTION_DAYS`) clamped and audited |
| `delete_due_items` | deletes every due request (`received/`, `quarantine/`), result and report (`outbox/`), staging folder and ledger payload; a **deletion certificate** per item in the audit (what, SHA-256, when, rule); already gone = certified *already gone* |
| `prune_audit_trail` | removes audit records past `WELFARE_EXCHANGE_AUDIT_RETENTION_DAYS` that an anchor that old covers, as a chained `audit.pruned` fact carrying the chain hash over |
| `anchor_audit_head` | verifies the trail, appends its head to the anchor store outside the database (`WELFARE_EXCHANGE_AUDIT_ANCHOR_FILE`), RFC 3161 time-stamped and/or signed, and records that in the trail; a TSA that does not answer fails the task (retried), never an unauthenticated anchor |

An unreachable SFTP server fails `delete_due_items` (its items stay due; the other municipalities'
items are deleted) and the task retries with backoff — see `docs/retention.md`, *When a retention
run fails*. Clearing any task is safe: nothing is deleted or certified twice.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, get_current_context, task

from welfare_exchange import audit
from welfare_exchange.runinfo import exchange_date
from welfare_exchange.orchestration.defaults import default_args
from welfare_exchange.retention import runner


def _day_and_actor() -> tuple[dt.date, audit.Actor]:
    context = get_current_context()
    return exchange_date(context), audit.Actor.from_context(context)


@dag(
    dag_id="retention_daily",
    dag_display_name="Retention · daily deletion run",
    description="Delete what reached its retention deadline, certify each deletion, prune the audit trail",
    doc_md=__doc__,
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["retention", "gdpr", "audit"],
)
def retention_daily():
    @task(task_id="end_protocols")
    def end_protocols() -> dict:
        as_of, actor = _day_and_actor()
        return runner.end_protocols(as_of, actor=actor)

    @task(task_id="apply_rules")
    def apply_rules() -> dict:
        as_of, actor = _day_and_actor()
        return runner.apply_rules(as_of, actor=actor)

    @task(task_id="delete_due_items")
    def delete_due_items() -> dict:
        as_of, actor = _day_and_actor()
        return runner.delete_due(as_of, actor=actor).summary()

    @task(task_id="prune_audit_trail")
    def prune_audit_trail() -> dict:
        as_of, actor = _day_and_actor()
        return runner.prune_audit(as_of, actor=actor)

    @task(task_id="anchor_audit_head")
    def anchor_audit_head() -> dict:
        return runner.anchor_audit(actor=_day_and_actor()[1])

    # Pruning does not wait for deletions: an SFTP outage must not hold the audit past its term.
    rules, prune = apply_rules(), prune_audit_trail()
    end_protocols() >> rules >> [delete_due_items(), prune]
    prune >> anchor_audit_head()


retention_dag = retention_daily()
