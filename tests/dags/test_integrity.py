"""DAG integrity: every DAG file imports cleanly, touches no database, network or connection
while being parsed, and every DAG carries the shared defaults (owner, retries with exponential
backoff, failure callback), tags and documentation."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

#: One protocol of every kind and channel, as the registry snapshot holds them.
SNAPSHOT = {
    "protocols": [
        {"id": 1, "nis_code": "44021", "municipality": "Gent", "kind": "method1", "channel": "sftp",
         "channel_connection": "sftp_44021", "key_connection": "key_44021", "status": "signed", "schedule": None,
         "valid_from": "2026-01-01", "valid_until": None, "sender_address": None},
        {"id": 2, "nis_code": "11002", "municipality": "Antwerpen", "kind": "method1", "channel": "smime",
         "channel_connection": "smime_11002", "key_connection": "key_11002", "status": "signed", "schedule": None,
         "valid_from": "2026-01-01", "valid_until": None, "sender_address": "dpo@antwerpen.example.org"},
        {"id": 3, "nis_code": "24062", "municipality": "Leuven", "kind": "method2", "channel": "sftp",
         "channel_connection": "sftp_24062", "key_connection": "key_24062", "status": "signed", "schedule": None,
         "valid_from": "2026-01-01", "valid_until": None, "sender_address": None},
        {"id": 4, "nis_code": "31005", "municipality": "Brugge", "kind": "structural", "channel": "sftp",
         "channel_connection": "sftp_31005", "key_connection": "key_31005", "status": "signed", "schedule": None,
         "valid_from": "2026-01-01", "valid_until": None, "sender_address": None},
        {"id": 5, "nis_code": "12025", "municipality": "Mechelen", "kind": "referral", "channel": "sftp",
         "channel_connection": "sftp_12025", "key_connection": "key_12025", "status": "signed", "schedule": None,
         "valid_from": "2026-01-01", "valid_until": None, "sender_address": None},
    ]
}

#: Parses the dags folder with every way out blocked: no network, no database, no connection.
PARSER = r"""
import json, socket, sys
def refuse(*a, **k):
    raise RuntimeError("network access while parsing DAG files")
socket.socket.connect = refuse
socket.create_connection = refuse
import sqlalchemy.engine.base
def no_db(*a, **k):
    raise RuntimeError("database access while parsing DAG files")
sqlalchemy.engine.base.Engine.connect = no_db
from airflow.sdk import BaseHook
def no_conn(*a, **k):
    raise RuntimeError("connection lookup while parsing DAG files")
BaseHook.get_connection = classmethod(no_conn)
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": {k: str(v)[-500:] for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "tags": sorted(dag.tags), "doc_md": bool(dag.doc_md), "fileloc": dag.fileloc,
        "tasks": {t.task_id: {"owner": t.owner, "retries": t.retries,
                              "backoff": t.retry_exponential_backoff,
                              "callback": bool(t.on_failure_callback),
                              "start_callback": bool(getattr(t, "_pre_execute_hook", None)
                                                     or getattr(t, "partial_kwargs", {}).get("pre_execute")),
                              "retry_callback": bool(t.on_retry_callback),
                              "success_callback": bool(t.on_success_callback)} for t in dag.tasks},
    }
print("RESULT " + json.dumps(out))
"""

#: Tasks that deliberately do not retry: a closed protocol gate stays closed; a feed whose
#: entitlement snapshot did not arrive in time is reported, not waited for twice; a feed summary
#: that reports an undelivered municipality would only report it again.
NO_RETRY = {"protocol_gate", "protocol_gate_before_delivery", "wait_for_fresh_snapshot", "summarise_feeds"}


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("integrity")
    snapshot = tmp / "snapshot.json"
    snapshot.write_text(json.dumps(SNAPSHOT))
    env = {
        **os.environ,
        "WELFARE_EXCHANGE_REGISTRY_SNAPSHOT": str(snapshot),
        # A database that cannot exist: any query at parse time would fail the import.
        "WELFARE_EXCHANGE_DB_URL": f"sqlite:///{tmp}/missing/dir/never.db",
    }
    done = subprocess.run([sys.executable, "-c", PARSER, str(ROOT / "dags")], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_every_dag_file_imports_without_db_network_or_connection(parsed):
    assert parsed["errors"] == {}
    files = {pathlib.Path(d["fileloc"]).name for d in parsed["dags"].values()}
    assert files == {p.name for p in (ROOT / "dags").glob("*.py")}, "every DAG file yields at least one DAG"


def test_one_method1_dag_per_protocol_naming_the_municipality(parsed):
    method1 = sorted(d for d in parsed["dags"] if d.startswith("method1_"))
    assert "method1_44021_gent_p1" in method1
    tags = parsed["dags"]["method1_44021_gent_p1"]["tags"]
    assert {"method1", "nis:44021", "Gent"} <= set(tags)


def test_every_dag_has_tags_docs_and_the_shared_defaults(parsed):
    for dag_id, dag in parsed["dags"].items():
        assert dag["tags"], f"{dag_id} has no tags"
        assert dag["doc_md"], f"{dag_id} has no doc_md"
        for task_id, task in dag["tasks"].items():
            assert task["owner"] == "welfare-exchange", f"{dag_id}.{task_id} owner"
            assert task["callback"], f"{dag_id}.{task_id} has no failure callback"
            assert task["start_callback"], f"{dag_id}.{task_id} does not record its start"
            assert task["retry_callback"] and task["success_callback"], f"{dag_id}.{task_id} does not record every try's outcome"
            if task_id not in NO_RETRY:
                assert task["retries"] >= 1, f"{dag_id}.{task_id} does not retry"
                assert task["backoff"], f"{dag_id}.{task_id} has no exponential backoff"


def test_dag_files_are_thin():
    for path in (ROOT / "dags").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 80, f"{path.name}: DAG files wire tasks; logic lives in include/"


@pytest.mark.parametrize("wanted", ["method1_44021_gent_p1", "method1_mail_triage", "method1_99999_elders_p9"])
def test_a_task_process_builds_only_its_own_method1_dag(tmp_path, monkeypatch, wanted):
    """Airflow names the DAG in a task's parsing context: the factory builds that one alone
    (285 protocols would otherwise cost every task start ~0.8 s); without a context, all."""
    # The variables Airflow's task runner sets before it parses the DAG file (its own context
    # manager does not unset them afterwards, so the test sets them through monkeypatch).
    from airflow.sdk.definitions.context import _AIRFLOW_PARSING_CONTEXT_DAG_ID, _AIRFLOW_PARSING_CONTEXT_TASK_ID

    from welfare_exchange.orchestration.dag_factory import method1_dags

    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(json.dumps(SNAPSHOT))
    monkeypatch.delenv(_AIRFLOW_PARSING_CONTEXT_DAG_ID, raising=False)
    assert set(method1_dags(snapshot)) == {"method1_44021_gent_p1", "method1_11002_antwerpen_p2", "method1_mail_triage"}
    monkeypatch.setenv(_AIRFLOW_PARSING_CONTEXT_DAG_ID, wanted)
    monkeypatch.setenv(_AIRFLOW_PARSING_CONTEXT_TASK_ID, "some_task")
    assert set(method1_dags(snapshot)) == ({wanted} if "elders" not in wanted else set())
