"""Depth-first scheduling and derived parallelism, checked on the DAGs as the scheduler sees them.

The scheduler orders the scheduled task instances of every run by ``priority_weight`` (highest
first), then by the run's logical date; a task instance's weight is computed by its weight rule
on the *serialized* DAG. These tests serialize a Method 1 DAG as the DAG processor does and ask
each task's own weight rule, no scheduler needed (the batch benchmark,
``bench/bench_concurrency.py``, measures the effect through a real one).
"""

from __future__ import annotations

import types

import pytest

from welfare_exchange.exchange import scheduling

ENTRY = {"id": 7, "nis_code": "44021", "municipality": "Gent", "kind": "method1", "channel": "sftp",
         "channel_connection": "sftp_44021", "key_connection": "key_44021", "status": "signed", "schedule": None,
         "valid_from": "2026-01-01", "valid_until": None, "sender_address": None}

#: The steps of one exchange, in the order they run.
CHAIN = ("protocol_gate", "wait_for_request", "fetch_request", "decrypt_and_validate", "match_entitlements",
         "build_result", "protocol_gate_before_delivery", "deliver_result", "record_retention")


def _weights(entry: dict) -> dict[str, int]:
    """``{task_id: priority weight}`` as the scheduler computes it from the serialized DAG."""
    from airflow.serialization.serialized_objects import DagSerialization

    from welfare_exchange.orchestration.dag_factory import build_method1_dag

    serialized = DagSerialization.from_dict(DagSerialization.to_dict(build_method1_dag(entry)))
    return {t.task_id: t.weight_rule.get_weight(types.SimpleNamespace(task=t)) for t in serialized.tasks}


def _slot_order(runs: dict[str, str], weights: dict[str, int]) -> list[str]:
    """The scheduler's order for one ready task per run (``{run: task}``, runs listed oldest first)."""
    position = {run: i for i, run in enumerate(runs)}
    return sorted(runs, key=lambda run: (-weights[runs[run]], position[run]))


@pytest.mark.parametrize("channel", ["sftp", "smime"])
def test_each_step_outranks_every_step_before_it(monkeypatch, channel):
    monkeypatch.delenv("WELFARE_EXCHANGE_TASK_WEIGHT_RULE", raising=False)
    weights = _weights({**ENTRY, "channel": channel, "sender_address": "dpo@gent.example.org"})
    along = [weights[task] for task in CHAIN]
    assert along == sorted(along) and len(set(along)) == len(along), dict(zip(CHAIN, along))
    # The subject index runs beside the delivery: above the steps it waits for.
    assert weights["record_data_subjects"] > weights["build_result"]


def test_a_started_exchange_gets_the_slots_before_new_ones(monkeypatch):
    """Twenty requests at once: the one furthest along is served first, the new ones last."""
    monkeypatch.delenv("WELFARE_EXCHANGE_TASK_WEIGHT_RULE", raising=False)
    weights = _weights(ENTRY)
    # Oldest run first; the oldest ones are still at the start, a later one is further along.
    runs = {"a": "protocol_gate", "b": "fetch_request", "c": "build_result", "d": "deliver_result",
            "e": "decrypt_and_validate"}
    assert _slot_order(runs, weights) == ["d", "c", "e", "b", "a"]


def test_todays_rule_would_serve_new_exchanges_first(monkeypatch):
    """Airflow's default (``downstream``): the first step of a new run outranks later steps —
    the breadth-first order the batch measured today, and what the setting restores."""
    monkeypatch.setenv("WELFARE_EXCHANGE_TASK_WEIGHT_RULE", "downstream")
    weights = _weights(ENTRY)
    runs = {"a": "protocol_gate", "b": "fetch_request", "c": "build_result", "d": "deliver_result"}
    assert _slot_order(runs, weights) == ["a", "b", "c", "d"]


def test_a_weight_rule_airflow_does_not_know_is_refused(monkeypatch):
    monkeypatch.setenv("WELFARE_EXCHANGE_TASK_WEIGHT_RULE", "depth")
    with pytest.raises(ValueError, match="WELFARE_EXCHANGE_TASK_WEIGHT_RULE must be one of upstream"):
        scheduling.task_defaults()


@pytest.mark.parametrize(("cores", "slots"), [(1, 4), (2, 8), (4, 16), (16, 64)])
def test_parallelism_is_derived_from_the_cores(cores, slots):
    assert scheduling.derived_parallelism(cores) == slots


def test_env_sh_and_the_image_apply_the_same_rule(tmp_path):
    """``scripts/env.sh`` (and the image's entrypoint) derive parallelism with the shell's
    ``nproc``: the same number as :func:`scheduling.derived_parallelism` on this machine."""
    import os

    name = "AIRFLOW__CORE__PARALLELISM"
    env = {k: v for k, v in os.environ.items() if k != name}
    env["WELFARE_EXCHANGE_HOME"] = str(tmp_path)
    assert _shell_values(name, env) == {"env.sh": str(scheduling.derived_parallelism()),
                                        "entrypoint.sh": str(scheduling.derived_parallelism())}
    # A value set by the operator wins.
    env[name] = "3"
    assert _shell_values(name, env) == {"env.sh": "3", "entrypoint.sh": "3"}


def _shell_values(name: str, env: dict[str, str]) -> dict[str, str]:
    """``$name`` as the dev shell (``scripts/env.sh``) and the image's entrypoint leave it, given ``env``."""
    import subprocess

    from welfare_exchange.settings import REPO_ROOT

    values = {}
    for script in (REPO_ROOT / "scripts" / "env.sh", REPO_ROOT / "docker" / "airflow" / "entrypoint.sh"):
        command = (f'source "{script}" && echo "${name}"' if script.name == "env.sh"
                   else f'"{script}" bash -c \'echo "${name}"\'')
        done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, check=True)
        values[script.name] = (done.stdout.strip().splitlines() or [""])[-1]
    return values


def test_a_worker_is_freed_within_a_second_everywhere_the_project_starts_airflow(monkeypatch, tmp_path):
    """Where Airflow's own LocalExecutor runs (the dev shell, the dev Airflow), the supervisor's
    wake-up (``[workers] min_heartbeat_interval``) is the project's, below Airflow's 5 s. The image
    keeps Airflow's 5 s: its workers watch the task's exit (``orchestration.task_exit``, tested in
    ``tests/orchestration/test_task_exit.py``). An operator's value wins everywhere."""
    import os

    from welfare_exchange.devtools.airflow_server import AirflowServer

    assert 1 <= scheduling.WORKER_WAKEUP_SECONDS < 5
    name = "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"
    env = {k: v for k, v in os.environ.items() if k != name}
    env["WELFARE_EXCHANGE_HOME"] = str(tmp_path)
    for chosen, expected, image in ((None, str(scheduling.WORKER_WAKEUP_SECONDS), ""), ("3", "3", "3")):
        if chosen:
            env[name] = chosen
        assert _shell_values(name, env) == {"env.sh": expected, "entrypoint.sh": image}
        if chosen:
            monkeypatch.setenv(name, chosen)
        else:
            monkeypatch.delenv(name, raising=False)
        assert AirflowServer(home=tmp_path / "airflow").environment()[name] == expected


def test_every_preloaded_module_exists():
    """A renamed module would stop the Celery workers at boot: caught here first."""
    import importlib

    for name in scheduling.PRELOAD_MODULES:
        importlib.import_module(name)


def test_the_dev_airflow_derives_parallelism(monkeypatch, tmp_path):
    from welfare_exchange.devtools.airflow_server import AirflowServer

    monkeypatch.delenv("AIRFLOW__CORE__PARALLELISM", raising=False)
    env = AirflowServer(home=tmp_path / "airflow").environment()
    assert env["AIRFLOW__CORE__PARALLELISM"] == str(scheduling.derived_parallelism())
    from welfare_exchange.orchestration import executor

    monkeypatch.delenv("AIRFLOW__CORE__EXECUTOR", raising=False)
    assert AirflowServer(home=tmp_path / "airflow").environment()["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor.EXECUTOR)
    assert AirflowServer(home=tmp_path / "airflow").environment()["AIRFLOW__CORE__EXECUTOR"] == executor.EXECUTOR
    assert issubclass(executor.PreloadingLocalExecutor, __import__("airflow.executors.local_executor",
                                                                   fromlist=["LocalExecutor"]).LocalExecutor)


def test_celery_workers_import_the_preloaded_modules_at_boot():
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    from welfare_exchange.orchestration.celery_config import CELERY_CONFIG

    assert set(scheduling.PRELOAD_MODULES) <= set(CELERY_CONFIG["imports"])
    assert {k: v for k, v in CELERY_CONFIG.items() if k != "imports"} == {
        k: v for k, v in DEFAULT_CELERY_CONFIG.items() if k != "imports"}
