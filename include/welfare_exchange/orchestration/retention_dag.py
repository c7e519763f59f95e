"""The daily retention DAG (``retention_daily``): each task one step of :mod:`welfare_exchange.retention.runner`."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, dag, get_current_context, task

from welfare_exchange import audit
from welfare_exchange.orchestration.defaults import default_args
from welfare_exchange.retention import runner
from welfare_exchange.runinfo import exchange_date


def _day_and_actor() -> tuple[dt.date, audit.Actor]:
    context = get_current_context()
    return exchange_date(context), audit.Actor.from_context(context)


def build_retention_dag(doc_md: str | None = None) -> DAG:
    """The ``retention_daily`` DAG (``doc_md``: the DAG file's documentation)."""

    @dag(
        dag_id="retention_daily",
        dag_display_name="Retention · daily deletion run",
        description="Delete what reached its retention deadline, certify each deletion, prune the audit trail",
        doc_md=doc_md,
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

    return retention_daily()
