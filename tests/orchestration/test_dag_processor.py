"""The DAG processor parses with the project modules the DAG files import already imported.

Airflow forks a child per DAG file parse; :mod:`welfare_exchange.orchestration.dag_processor`
imports the project modules the DAG files name before Airflow's ``dag-processor`` starts, so each
child inherits them instead of importing them again. The proof runs the real DAG processor: a
DAG file looks, *before* its own import line, whether the module is already there, and says so
in its DAG's description. Airflow's own command is the control.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

from welfare_exchange.devtools.airflow_server import DAG_PROCESSOR_MODULE
from welfare_exchange.orchestration import dag_processor
from welfare_exchange.settings import REPO_ROOT

#: Imported by no Airflow component or plugin of the project, only by the probe's DAG file.
PROBED = "welfare_exchange.orchestration.retention_dag"

PROBE_DAG = textwrap.dedent(
    f'''
    """Says in its description whether {PROBED} was imported before this file's own import of it."""
    import datetime as dt
    import sys

    PRELOADED = "{PROBED}" in sys.modules

    from airflow.sdk import DAG

    from {PROBED} import build_retention_dag  # noqa: F401

    probe = DAG(dag_id="wx_preload_probe", description=f"preloaded={{PRELOADED}}", schedule=None,
                start_date=dt.datetime(2026, 1, 1), catchup=False, tags=["test"])
    '''
)


def test_the_project_imports_of_the_dag_files_are_found(tmp_path):
    found = list(dag_processor.project_imports(sorted((REPO_ROOT / "dags").glob("*.py"))))
    assert "welfare_exchange.orchestration.dag_factory" in found
    assert "welfare_exchange.orchestration.retention_dag" in found
    assert len(found) == len(set(found))
    assert all(name.startswith("welfare_exchange.") for name in found)
    # Relative, foreign and look-alike imports are not the project's; a file that does not parse
    # is left to Airflow, which reports it as an import error.
    (tmp_path / "a.py").write_text("import welfare_exchange_other\nfrom . import x\nimport os, welfare_exchange.insz\n"
                                   "def f():\n    from welfare_exchange import ledger\n")
    (tmp_path / "broken.py").write_text("def (:\n")
    assert list(dag_processor.project_imports([tmp_path / "broken.py", tmp_path / "a.py"])) == [
        "welfare_exchange.insz", "welfare_exchange"]


def test_a_module_that_fails_to_import_is_left_to_the_parse(tmp_path):
    (tmp_path / "dag.py").write_text("import welfare_exchange.no_such_module\nimport welfare_exchange.insz\n")
    assert dag_processor.preload(tmp_path) == ["welfare_exchange.insz"]


def test_the_launcher_runs_airflows_own_dag_processor_command():
    done = subprocess.run([sys.executable, "-m", DAG_PROCESSOR_MODULE, "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: airflow dag-processor" in done.stdout.lower()


def test_the_compose_dag_processor_runs_the_launcher():
    import yaml

    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
    assert compose["services"]["airflow-dag-processor"]["command"] == ["python", "-m", DAG_PROCESSOR_MODULE]


@pytest.mark.slow
@pytest.mark.parametrize("preload", [True, False], ids=["launcher", "airflow-command"])
def test_each_parse_inherits_the_preloaded_modules(airflow_server_factory, tmp_path: pathlib.Path, preload):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "probe.py").write_text(PROBE_DAG)
    server = airflow_server_factory(dags_folder=dags, preload_dag_processor=preload)
    assert server.wait_for_dag("wx_preload_probe", timeout=180)["description"] == f"preloaded={preload}"
