"""For tests that run DAGs: a DAG file loaded as Airflow loads it, and a run's task states."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType

DAGS = pathlib.Path(__file__).resolve().parents[1] / "dags"


def load_dag_file(name: str) -> ModuleType:
    """``dags/<name>.py``, executed afresh (so default args follow the test's environment)."""
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", DAGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def task_states(run, *, by_map_index: bool = False) -> dict:
    """Task id (or ``(task id, map index)``) → state of every task instance of a DAG run."""
    return {
        ((ti.task_id, ti.map_index) if by_map_index else ti.task_id): str(ti.state) for ti in run.get_task_instances()
    }
