"""A Method 1 exchange whose connections come only from an Airflow secrets backend.

The deployment may keep the SFTP accounts and the DPOs' file passwords in a secrets backend
instead of Airflow's metadata DB or ``AIRFLOW_CONN_*`` variables. Airflow's own
``LocalFilesystemBackend`` (a JSON file; the same interface as Vault, AWS or GCP backends)
supplies both the ``sftp_<nis>`` and the ``key_<nis>`` connection here, with no
``AIRFLOW_CONN_*`` variable left in the environment, and the exchange runs end to end with
``dag.test()`` against the real OpenSSH server.
"""

from __future__ import annotations

import json
import os

import pytest
from airflow.sdk import BaseHook

from tests.dagutil import task_states
from tests.exchange.builders import encrypted_request

pytestmark = [pytest.mark.sftp]

BACKEND = "airflow.secrets.local_filesystem.LocalFilesystemBackend"


def _move_connections_to_a_file(monkeypatch, path) -> set[str]:
    """Every ``AIRFLOW_CONN_*`` variable removed from the environment, its connection written to
    ``path`` in the backend's JSON form (0600); returns the connection ids."""
    connections = {}
    for name in [n for n in os.environ if n.startswith("AIRFLOW_CONN_")]:
        value = json.loads(os.environ[name])
        if isinstance(value.get("extra"), dict):
            value["extra_dejson"] = value.pop("extra")
        connections[name.removeprefix("AIRFLOW_CONN_").lower()] = value
        monkeypatch.delenv(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(connections, fh)
    return set(connections)


def test_method1_exchange_with_connections_from_a_secrets_backend(method1, tmp_path, monkeypatch):
    nis = method1.municipality.nis
    moved = _move_connections_to_a_file(monkeypatch, tmp_path / "connections.json")
    assert {f"sftp_{nis}", f"key_{nis}"} <= moved
    assert not [name for name in os.environ if name.startswith("AIRFLOW_CONN_")]
    with pytest.raises(Exception, match=f"key_{nis}"):  # no other source knows it
        BaseHook.get_connection(f"key_{nis}")
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND", BACKEND)
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND_KWARGS", json.dumps({"connections_file_path": str(tmp_path / "connections.json")}))
    assert BaseHook.get_connection(f"key_{nis}").password == method1.password

    numbers = [number for number, _ in method1.world.children[:40]]
    method1.municipality.upload_request(encrypted_request(numbers, method1.password), "aanvraag.xlsx")
    run = method1.run()

    assert run.state == "success", task_states(run)
    [(_, data)] = method1.results().items()
    assert "Resultaat" in method1.open_result(data)  # encrypted with the key connection's password
    [exchange] = method1.exchanges()
    assert exchange.state == "delivered"
