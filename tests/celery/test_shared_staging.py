"""Staging every worker reaches: two Celery workers that share no folder (as on two hosts), ten
Method 1 exchanges at once, the ``postgres`` staging back end.

Each worker has its own ``WELFARE_EXCHANGE_STAGING_DIR``; tasks of one exchange land on either.
With staged files in the project database every exchange is delivered exactly once, the
subject index holds every request and every result, and once retention has run nothing is left:
no intermediate after ``record_retention``, no staged file after the staging deadline, and no
file in either worker's folder. (The ``local`` back end on this set-up is not run here: which
worker takes which task is up to Celery, so its failures are not reproducible; that a worker
with another folder fails loudly, with cause ``staging_missing``, is proven deterministically in
``tests/staging/test_staging_backends.py``.) Slow (~3–5 min on 2 cores).
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
import sqlalchemy as sa

from tests.exchange.builders import build_world, encrypted_request
from tests.exchange.conftest import LOGICAL_DATE, _signed_protocol
from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange, StagedBlob
from welfare_exchange.orchestration.dag_factory import method1_dags
from welfare_exchange.protocols import registry
from welfare_exchange.retention import runner
from welfare_exchange.settings import REPO_ROOT

EXCHANGES = 10


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.sftp
def test_ten_exchanges_on_two_workers_without_a_shared_folder(postgres_db, sftp_municipalities, celery_airflow,
                                                             monkeypatch, tmp_path):
    monkeypatch.setenv("WELFARE_EXCHANGE_STAGING_BACKEND", "postgres")
    folders = [tmp_path / "host-a" / "staging", tmp_path / "host-b" / "staging"]
    monkeypatch.setenv("WELFARE_EXCHANGE_STAGING_DIR", str(tmp_path / "scheduler" / "staging"))
    municipalities = sftp_municipalities(EXCHANGES)
    requested: dict[int, int] = {}
    for index, m in enumerate(municipalities):
        protocol_id, password = _signed_protocol(monkeypatch, m.nis, municipality=f"Testgemeente {m.nis}", channel="sftp")
        world = build_world(m.nis, children=40, seed=1000 + index)
        numbers = [number for number, _ in world.children[:30]]
        m.upload_request(encrypted_request(numbers, password), "aanvraag.xlsx")
        requested[protocol_id] = len(numbers)
    with session_scope() as session:
        registry.write_snapshot(session)
    dag_ids = {d.params["protocol_id"]: d.dag_id for d in method1_dags().values() if d.params.get("protocol_id") in requested}
    assert len(dag_ids) == EXCHANGES

    cluster = celery_airflow(REPO_ROOT / "dags", worker_env=[{"WELFARE_EXCHANGE_STAGING_DIR": str(f)} for f in folders])
    af = cluster.server
    for dag_id in dag_ids.values():
        af.wait_for_dag(dag_id, timeout=180)
        af.unpause(dag_id)
    started = time.monotonic()
    runs = {dag_id: af.trigger(dag_id, logical_date=LOGICAL_DATE) for dag_id in dag_ids.values()}
    states = {dag_id: af.wait_for_run(dag_id, run_id, timeout=600) for dag_id, run_id in runs.items()}
    print(f"\n{EXCHANGES} exchanges on two workers: last run done {time.monotonic() - started:.0f} s after the triggers")
    assert set(states.values()) == {"success"}, states
    # Both workers took tasks: the exchanges' steps really ran on two "hosts".
    assert all("execute_workload" in cluster.worker_log(i) for i in range(2))

    # 10/10 delivered, exactly once each.
    with session_scope() as session:
        exchanges = list(session.scalars(sa.select(Exchange)))
        facts = list(session.scalars(sa.select(AuditRecord)))
        assert audit.verify(session).ok
    assert sorted(e.protocol_id for e in exchanges) == sorted(requested) and {e.state for e in exchanges} == {"delivered"}
    # One result and one receipt per outbox.
    outboxes = [sorted(m.read_outbox()) for m in municipalities]
    assert all(len([n for n in names if n.endswith(".xlsx")]) == 1 for names in outboxes), outboxes
    assert all(len([n for n in names if "ontvangstbevestiging" in n]) == 1 for names in outboxes), outboxes
    delivered = [f for f in facts if f.action == "result.delivered"]
    assert sorted(f.exchange_id for f in delivered) == sorted(e.id for e in exchanges)

    # The subject index is complete: every request's children and every result's people.
    by_exchange = {e.id: e.protocol_id for e in exchanges}
    request_subjects = {f.exchange_id: f.counts["children"] for f in facts if f.action == "request.subjects"}
    assert request_subjects == {eid: requested[pid] for eid, pid in by_exchange.items()}
    assert {f.exchange_id for f in facts if f.action == "result.subjects"} == set(by_exchange)

    # Nothing left behind: intermediates gone at record_retention, the rest at its deadline; no
    # worker's own folder ever held anything.
    with session_scope() as session:
        left = set(session.scalars(sa.select(StagedBlob.name)))
    assert left == {"request.fernet", "result.xlsx"}, left
    report = runner.delete_due(LOGICAL_DATE.date() + dt.timedelta(days=400), actor=audit.Actor(type="user", name="test"),
                               kinds=("staging", "request_file"), raise_on_failure=False)
    assert report.failures == [] and report.missing == []
    assert len([c for c in report.certificates if c.kind == "staging"]) == EXCHANGES
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(StagedBlob)) == 0
    assert [p for f in folders for p in f.rglob("*") if p.is_file()] == []
