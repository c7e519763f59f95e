"""DAG integrity: the feed and import DAGs parse cleanly, without the project DB, as documented."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable

from tests.dagutil import load_dag_file
from welfare_exchange.orchestration.defaults import OWNER
from welfare_exchange.orchestration.assets import ENTITLEMENT_SNAPSHOT
from welfare_exchange.feeds.interval import BRUSSELS

def test_structural_feeds_dag_shape(monkeypatch, tmp_path):
    # Parsing must not touch the project database: point it at a file that does not exist.
    monkeypatch.setenv("WELFARE_EXCHANGE_DB_URL", f"sqlite:///{tmp_path / 'absent' / 'no.db'}")
    monkeypatch.setenv("WELFARE_EXCHANGE_FEED_SCHEDULE", "0 0 1 * *")
    monkeypatch.setenv("WELFARE_EXCHANGE_FEED_START_DATE", "2025-01-01")
    monkeypatch.delenv("WELFARE_EXCHANGE_FEED_DEADLINE_ALERT", raising=False)
    dag = load_dag_file("structural_feeds").structural_feeds_dag
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.catchup is True and dag.start_date.astimezone(BRUSSELS).date() == dt.date(2025, 1, 1) and dag.max_active_runs == 1
    assert dag.deadline and dag.deadline[0].interval > dt.timedelta(days=31)
    assert [t.task_id for t in dag.topological_sort()] == [
        "wait_for_fresh_snapshot", "select_municipalities", "detect_changes", "deliver_feed", "summarise_feeds",
    ]
    tasks = dag.task_dict
    assert tasks["wait_for_fresh_snapshot"].inlets == [ENTITLEMENT_SNAPSHOT]
    assert tasks["wait_for_fresh_snapshot"].mode == "reschedule"
    assert tasks["deliver_feed"].map_index_template == "{{ feed_label }}"
    assert tasks["summarise_feeds"].trigger_rule == "all_done"
    assert all(t.owner == OWNER and t.on_failure_callback for t in tasks.values())
    assert not (tmp_path / "absent").exists()
    assert dag.doc_md and "nieuw" in dag.doc_md


def test_entitlement_import_emits_the_snapshot_asset():
    dag = load_dag_file("entitlement_import").entitlement_import_dag
    assert dag.schedule is None  # triggered after each extract
    assert dag.task_dict["import_entitlements"].outlets == [ENTITLEMENT_SNAPSHOT]
