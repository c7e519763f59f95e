"""The structural feeds DAG (``structural_feeds``): the tasks of :mod:`welfare_exchange.orchestration.feed_tasks`."""

from __future__ import annotations

from airflow.sdk import DAG, CronDataIntervalTimetable, dag, task

from welfare_exchange.feeds.config import TIMEZONE, get_feed_config
from welfare_exchange.orchestration import feed_tasks as tasks
from welfare_exchange.orchestration.assets import ENTITLEMENT_SNAPSHOT
from welfare_exchange.orchestration.deadline import deadline_alert
from welfare_exchange.orchestration.defaults import default_args


def build_structural_feeds_dag(doc_md: str | None = None) -> DAG:
    """The ``structural_feeds`` DAG, configured by :func:`~welfare_exchange.feeds.config.get_feed_config`."""
    config = get_feed_config()

    @dag(
        dag_id="structural_feeds",
        dag_display_name="Structural feeds · all municipalities",
        description="Periodic delivery of sociale toeslag changes to municipalities with a structural protocol",
        doc_md=doc_md,
        schedule=CronDataIntervalTimetable(config.schedule, timezone=TIMEZONE),
        start_date=tasks.start_datetime(),
        catchup=config.catchup,
        max_active_runs=1,
        max_active_tasks=config.max_active_tasks,
        default_args=default_args(),
        deadline=deadline_alert(config) if config.deadline_alert else None,
        tags=["structural", "feed", "sftp"],
    )
    def structural_feeds():
        fresh = task.sensor(
            task_id="wait_for_fresh_snapshot", inlets=[ENTITLEMENT_SNAPSHOT], mode="reschedule", poke_interval=config.snapshot_poke.total_seconds(),
            timeout=config.snapshot_timeout.total_seconds(), retries=0,
        )(tasks.snapshot_is_fresh)()
        feeds = task(task_id="select_municipalities")(tasks.select_municipalities)()
        planned = task(task_id="detect_changes")(tasks.detect_changes)(feeds)
        delivered = task(task_id="deliver_feed", map_index_template="{{ feed_label }}")(tasks.deliver_feed).expand(feed=planned)
        summary = task(task_id="summarise_feeds", trigger_rule="all_done", retries=0)(tasks.summarise_feeds)(planned)
        fresh >> feeds
        delivered >> summary

    return structural_feeds()
