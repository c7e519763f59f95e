"""The referral round trip under the REAL scheduler on real SFTP: the list out, feedback in, the
evaluation report — then every task cleared as an operator would: nothing is sent twice, the
audit chain stays intact, and no task log holds an INSZ or a parent's name."""

from __future__ import annotations

import datetime as dt
import os

import pytest
import sqlalchemy as sa

from tests.fixtures.pii_scan import assert_no_insz_in_files
from tests.referral.builders import NAME, family, feedback_file, read_workbook
from tests.referral.conftest import LIST_RUN, TODAY, elsewhere_nis, import_families
from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Referral, ReferralFeedback, SideEffect
from welfare_exchange.orchestration.referral_dag import feedback_dag_id, referral_dag_id
from welfare_exchange.settings import REPO_ROOT, get_settings

LIST_TASKS = ["protocol_gate", "build_referral_list", "protocol_gate_before_delivery", "deliver_referral_list",
              "notify_withdrawals", "record_retention"]
FEEDBACK_TASKS = ["wait_for_feedback", "receive_feedback", "report_evaluation", "check_feedback_deadline"]


@pytest.mark.slow
def test_referral_round_trip_under_the_scheduler_sends_nothing_twice(agreement, airflow_server_factory, capsys):
    nis = agreement.municipality.nis
    given = TODAY - dt.timedelta(days=5)  # before both list runs
    due = [family(nis=nis, given=given) for _ in range(12)]
    left_out = [family(nis=nis, given=None), family(nis=nis, given=given, withdrawn=TODAY - dt.timedelta(days=4)),
                family(nis=elsewhere_nis(nis), given=given)]
    import_families([*due, *left_out])
    agreement.dags()  # writes the registry snapshot the DAG processor reads
    list_id, feedback_id = referral_dag_id(agreement.entry), feedback_dag_id(agreement.entry)
    env = {k: v for k, v in os.environ.items() if k.startswith(("WELFARE_EXCHANGE_", "AIRFLOW_CONN_"))}
    env["WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS"] = "30"
    airflow = airflow_server_factory(dags_folder=REPO_ROOT / "dags", env=env)
    for dag_id in (list_id, feedback_id):
        airflow.wait_for_dag(dag_id, timeout=180)
        airflow.unpause(dag_id)

    # The list out. A scheduler runs no run dated in the future: last week's run, then this week's.
    first, second = LIST_RUN - dt.timedelta(days=3), LIST_RUN - dt.timedelta(days=1)
    run_id = airflow.trigger(list_id, logical_date=first)
    assert airflow.wait_for_run(list_id, run_id, timeout=300) == "success", airflow.task_states(list_id, run_id)
    lists = agreement.outbox("doorverwijzingen_")
    assert len(lists) == 1
    [data] = lists.values()
    sent_rows = len(read_workbook(data, agreement.password)["Doorverwijzingen"]) - 1
    assert sent_rows == len(due)
    for task_id in LIST_TASKS:
        assert airflow.clear_task(list_id, run_id, task_id) == [task_id]
        assert airflow.wait_for_run(list_id, run_id, timeout=300) == "success", (task_id, airflow.task_states(list_id, run_id))
        assert agreement.outbox("doorverwijzingen_") == lists, f"the list changed after clearing {task_id}"
    week = airflow.trigger(list_id, logical_date=second)
    assert airflow.wait_for_run(list_id, week, timeout=300) == "success"
    assert agreement.outbox("doorverwijzingen_") == lists, "a family was referred twice"

    # Feedback in, the evaluation report out. Unpausing the daily feedback DAG let the scheduler
    # start its latest interval's run on its own: it ends first (nothing to take yet), or it would
    # take the file the run triggered below is meant to receive.
    assert set(airflow.wait_for_all_runs(feedback_id, timeout=300, at_least=1).values()) == {"success"}
    codes = sorted(agreement.codes().values())
    outcomes = ["gecontacteerd"] * 5 + ["ondersteuning gestart"] * 4 + ["geweigerd"] * 3
    agreement.municipality.upload_request(
        feedback_file(list(zip(codes, outcomes, [TODAY] * len(codes))), agreement.password), "terugkoppeling_week1.xlsx"
    )
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    run_id = airflow.trigger(feedback_id, logical_date=now)
    assert airflow.wait_for_run(feedback_id, run_id, timeout=300) == "success", airflow.why(feedback_id, run_id)
    assert airflow.task_states(feedback_id, run_id)["report_evaluation"] == "success", airflow.why(feedback_id, run_id)
    outbox = get_settings().agency_outbox / "referral"
    reports = {p.name: p.read_bytes() for p in outbox.iterdir()}
    assert len(reports) == 1
    for task_id in FEEDBACK_TASKS:
        assert airflow.clear_task(feedback_id, run_id, task_id) == [task_id]
        assert airflow.wait_for_run(feedback_id, run_id, timeout=300) == "success", (task_id, airflow.task_states(feedback_id, run_id))
    assert {p.name: p.read_bytes() for p in outbox.iterdir()} == reports

    with session_scope() as session:
        selected = session.scalar(sa.select(sa.func.count()).select_from(Referral))
        sent = session.scalar(sa.select(sa.func.count()).select_from(Referral).where(Referral.sent_at.is_not(None)))
        received = session.scalar(sa.select(sa.func.count()).select_from(ReferralFeedback))
        deliveries = session.scalars(sa.select(SideEffect).where(SideEffect.kind == "referral_list")).all()
        assert len(deliveries) == 1 and deliveries[0].state == "done"
        assert audit.verify(session).ok
    assert (selected, sent, received) == (len(due), len(due), len(due))
    assert agreement.actions().count("referral.list_sent") == 1
    assert agreement.actions().count("referral.feedback_recorded") == 1
    assert agreement.actions().count("referral.evaluation_reported") == 1
    assert agreement.remote("inbox") == [] and agreement.remote("received") == ["terugkoppeling_week1.xlsx"]

    logs = airflow.task_log_dir()
    assert assert_no_insz_in_files(logs) > 0
    leaks = [p.name for p in logs.rglob("*") if p.is_file() and NAME in p.read_text(errors="replace")]
    assert not leaks, f"a parent's name in task logs: {leaks}"
    with capsys.disabled():
        print(f"\nreferral round trip: families selected {selected}, sent {sent}, feedback received {received}; "
              f"left out {len(left_out)} (no consent, withdrawn, elsewhere); lists delivered {len(lists)}; "
              f"evaluation reports {len(reports)}")
