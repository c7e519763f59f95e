"""Shared test set-up: the checkout's runtime environment and every fixture module.

Fixture modules live in ``tests/fixtures/`` (one per real server or resource: the project
database, the OpenSSH SFTP server, the mail servers, …) and are all loaded here.
"""

from __future__ import annotations

import os
import pathlib
import secrets

_ROOT = pathlib.Path(__file__).resolve().parents[1]

# When pytest is run by hand instead of through `make test`, give it the same environment.
os.environ.setdefault("WELFARE_EXCHANGE_HOME", str(_ROOT / "var"))
os.environ.setdefault("AIRFLOW_HOME", str(pathlib.Path(os.environ["WELFARE_EXCHANGE_HOME"]) / "airflow"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(_ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(_ROOT / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__PARALLELISM", "4")
# dag.test() has no executor, so no stale-event race: no floor between rescheduled pokes there
# (a real scheduler started by the tests keeps the deployment's floor, see AirflowServer).
os.environ.setdefault("WELFARE_EXCHANGE_RESCHEDULE_FLOOR_SECONDS", "0")
os.environ.setdefault("WELFARE_EXCHANGE_AUDIT_HMAC_KEY", secrets.token_hex(32))
os.environ.setdefault("WELFARE_EXCHANGE_AUDIT_SIGNING_KEY", secrets.token_hex(32))  # any 32 bytes: an Ed25519 key

# Steps called directly read connections as the tasks do: through the Airflow hooks.
import welfare_exchange.orchestration.hooks  # noqa: E402,F401

pytest_plugins = ["pytester"] + sorted(
    f"tests.fixtures.{path.stem}"
    for path in (_ROOT / "tests" / "fixtures").glob("*.py")
    if path.stem != "__init__"
)
