"""The development Airflow runs for real: a tiny TaskFlow DAG goes through the scheduler.

Slow (~40 s): a fresh metadata DB is migrated and all four components start. Nothing here is
skipped — a missing piece (no `airflow` command, a component that dies) fails the test.
"""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from welfare_exchange.devtools.airflow_server import (
    FAB_AUTH_MANAGER,
    HOST,
    SIMPLE_AUTH_MANAGER,
    AirflowServer,
    AirflowServerError,
    default_home,
)

DAG_ID = "wx_devtools_tiny"

TINY_DAG = textwrap.dedent(
    f'''
    """Three TaskFlow tasks in a row; the last one checks what the first two passed on."""
    import datetime as dt

    from airflow.sdk import dag, task


    @dag(dag_id="{DAG_ID}", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False, tags=["test"])
    def tiny():
        @task
        def produce():
            return 20

        @task
        def add(x):
            return x + 1

        @task
        def check(y):
            assert y == 21, y

        check(add(produce()))


    tiny()
    '''
)


@pytest.mark.slow
def test_dag_runs_through_the_scheduler_and_a_cleared_task_runs_again(airflow_server_factory, tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "tiny.py").write_text(TINY_DAG)

    server = airflow_server_factory(dags_folder=dags, env={"WX_TEST_MARKER": "1"})
    assert server.running
    # Health says every component is up, and the private home has its own DB and logs.
    health = server.health()
    for part in ("metadatabase", "scheduler", "dag_processor", "triggerer"):
        assert health[part]["status"] == "healthy", health
    assert server.home != default_home()
    assert (server.home / "airflow.db").exists()
    assert server.url == f"http://{HOST}:{server.port}"

    dag = server.wait_for_dag(DAG_ID, timeout=120)
    assert dag["is_paused"] is True  # new DAGs start paused
    server.unpause(DAG_ID)

    seen: list[tuple[str, str | None]] = []
    run_id = server.trigger(DAG_ID)
    assert server.wait_for_run(DAG_ID, run_id, timeout=180, on_task_state=lambda t, s: seen.append((t, s))) == "success"
    assert server.task_states(DAG_ID, run_id) == {"produce": "success", "add": "success", "check": "success"}
    assert ("check", "success") in seen

    # Clear the middle task with its downstream, as an operator does: both run again.
    cleared = server.clear_task(DAG_ID, run_id, "add", downstream=True)
    assert cleared == ["add", "check"]
    assert server.run_state(DAG_ID, run_id) in {"queued", "running"}
    assert server.wait_for_run(DAG_ID, run_id, timeout=180) == "success"
    assert server.task_states(DAG_ID, run_id) == {"produce": "success", "add": "success", "check": "success"}
    attempts = sorted(p.name for p in server.task_log_dir().glob(f"dag_id={DAG_ID}/**/task_id=add/*.log"))
    assert attempts == ["attempt=1.log", "attempt=2.log"]

    # Clearing one task alone leaves the others as they were.
    assert server.clear_task(DAG_ID, run_id, "check") == ["check"]
    assert server.wait_for_run(DAG_ID, run_id, timeout=180) == "success"

    # Loopback only: no Airflow process listens on another address.
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    pids = {str(p.pid) for p in server._procs.values()}
    exposed = [line for line in listening.splitlines()
               if any(f"pid={pid}," in line for pid in pids) and f"{HOST}:" not in line.split()[3]]
    assert not exposed, exposed

    server.stop()
    assert not server.running
    server.stop()  # twice is fine


def test_rest_errors_are_clear(tmp_path):
    server = AirflowServer(home=tmp_path / "home", port=1)
    assert server.url == f"http://{HOST}:1"
    # The password file appears only once the API server ran.
    with pytest.raises(AirflowServerError, match="does not exist yet"):
        server.admin_password()
    env = server.environment()
    assert env["AIRFLOW__API__HOST"] == HOST
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith(f"sqlite:///{tmp_path}")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://{HOST}:1/execution/"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"


def test_extra_env_cannot_move_the_server_off_loopback(tmp_path):
    server = AirflowServer(home=tmp_path / "home", env={"AIRFLOW__API__HOST": "0.0.0.0", "AIRFLOW_CONN_X": "{}"})
    env = server.environment()
    assert env["AIRFLOW__API__HOST"] == HOST
    assert env["AIRFLOW_CONN_X"] == "{}"


def test_the_auth_manager_is_chosen_by_name_and_not_by_extra_env(tmp_path):
    fab = AirflowServer(home=tmp_path / "fab", auth_manager="fab", env={"AIRFLOW__CORE__AUTH_MANAGER": "elsewhere.Manager"})
    assert fab.environment()["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER
    assert fab.password_file == tmp_path / "fab" / "fab_passwords.json.generated"
    simple = AirflowServer(home=tmp_path / "simple")
    assert simple.environment()["AIRFLOW__CORE__AUTH_MANAGER"] == SIMPLE_AUTH_MANAGER
    with pytest.raises(AirflowServerError, match="only under the FAB auth manager"):
        simple.create_user("someone", "Viewer")
    with pytest.raises(ValueError, match="auth_manager must be one of"):
        AirflowServer(home=tmp_path / "x", auth_manager="ldap")
