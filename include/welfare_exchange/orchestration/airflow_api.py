"""Airflow's public REST API (v2), as the Exchanges view and ``welfare-exchange exchange retry`` use it.

The one place the view and the CLI talk to Airflow. Every call carries a caller's own token —
the logged-in user's, or the operator's the CLI logged in with — so Airflow decides what that
user may see and do, exactly as in its own UI: a viewer's retry is refused by Airflow too.

Only what the view needs is kept from a response (ids, states, times, try numbers): a task
instance also carries its rendered fields, which are never read, shown or logged.

* :meth:`AirflowApi.runs` — DAG runs of many DAGs at once (``POST /api/v2/dags/~/dagRuns/list``);
* :meth:`AirflowApi.task_instances` — the tasks of many runs (``POST …/taskInstances/list``);
* :meth:`AirflowApi.dags_last_run` — DAGs whose latest run is in a state (``GET /api/v2/dags``);
* :meth:`AirflowApi.clear` — clear tasks with their downstream (``POST …/clearTaskInstances``).

Where the API is: ``WELFARE_EXCHANGE_AIRFLOW_API_URL`` when set; inside the API server, the
address and port this request reached it on (:func:`url_of_this_server`), so the view calls
its own server over loopback; for the CLI, the ``airflow_api`` connection (:func:`for_cli`).
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from welfare_exchange import connections
from welfare_exchange.errors import InputError, WelfareExchangeError
from welfare_exchange.settings import get_settings

log = logging.getLogger(__name__)

#: Largest page Airflow serves by default (``[api] maximum_page_limit``).
PAGE = 100
#: A bound on what one view asks for; beyond it the view says the list was cut.
MAX_ROWS = 1000
TIMEOUT_SECONDS = 15.0
#: Task states in which a task has not finished (it waits, runs or will run).
ACTIVE_TASK_STATES = frozenset({"queued", "scheduled", "running", "deferred", "up_for_reschedule", "up_for_retry",
                                "restarting"})


class AirflowApiError(WelfareExchangeError):
    """Airflow's API could not be reached or refused a call; ``status`` is its HTTP status (0: no answer)."""

    code = "airflow_api"

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Task:
    """A task instance of a run (mapped ones carry their ``map_index``)."""

    task_id: str
    state: str | None
    start_date: dt.datetime | None
    end_date: dt.datetime | None
    try_number: int
    map_index: int = -1


@dataclass(frozen=True)
class Run:
    """A DAG run; ``tasks`` when they were asked for."""

    dag_id: str
    run_id: str
    state: str
    run_after: dt.datetime | None
    start_date: dt.datetime | None
    end_date: dt.datetime | None
    tasks: tuple[Task, ...] = ()


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _run(body: Mapping[str, Any]) -> Run:
    return Run(dag_id=body["dag_id"], run_id=body["dag_run_id"], state=body["state"], run_after=_time(body.get("run_after")),
               start_date=_time(body.get("start_date")), end_date=_time(body.get("end_date")))


def _task(body: Mapping[str, Any]) -> Task:
    return Task(task_id=body["task_id"], state=body.get("state"), start_date=_time(body.get("start_date")),
                end_date=_time(body.get("end_date")), try_number=int(body.get("try_number") or 0),
                map_index=int(body.get("map_index", -1)))


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.timezone.utc).isoformat() if moment is not None else None


class AirflowApi:
    """A client of Airflow's REST API acting as one user.

    :param base_url: where Airflow's API server answers, e.g. ``http://127.0.0.1:8080``.
    :param token: the user's JWT (Airflow's ``_token`` cookie, or ``POST /auth/token``).
    :param client: an ``httpx.Client`` to use instead of a new one (tests pass Starlette's).
    """

    def __init__(self, base_url: str, token: str, *, client: httpx.Client | None = None,
                 timeout: float = TIMEOUT_SECONDS, username: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        #: who this client acts as, when it logged in itself (:meth:`login`).
        self.username = username
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._client = client or httpx.Client(timeout=timeout)
        self._own_client = client is None

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def __enter__(self) -> AirflowApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def login(cls, base_url: str, username: str, password: str) -> AirflowApi:
        """Log in as ``username`` (``POST /auth/token``): a client acting as that user.

        :raises AirflowApiError: Airflow refused the login or could not be reached.
        """
        url = f"{base_url.rstrip('/')}/auth/token"
        try:
            resp = httpx.post(url, json={"username": username, "password": password}, timeout=TIMEOUT_SECONDS)
        except httpx.HTTPError as err:
            raise AirflowApiError(f"Airflow's API at {base_url} cannot be reached ({type(err).__name__})") from None
        if resp.status_code not in (200, 201):
            raise AirflowApiError(f"Airflow refused the login of {username!r} at {base_url} (HTTP {resp.status_code})",
                                  resp.status_code)
        return cls(base_url, resp.json()["access_token"], username=username)

    # ------------------------------------------------------------------ transport
    def _call(self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        try:
            resp = self._client.request(method, f"{self.base_url}{path}", json=json_body, params=params,
                                        headers=self._headers)
        except httpx.HTTPError as err:
            raise AirflowApiError(f"Airflow's API at {self.base_url} cannot be reached ({type(err).__name__})") from None
        if resp.status_code >= 400:
            # Airflow's detail names ids and states only; cut it short all the same.
            try:
                detail = str(resp.json().get("detail"))[:300]
            except ValueError:
                detail = ""
            raise AirflowApiError(f"Airflow answered {method} {path.split('?')[0]} with HTTP {resp.status_code}: {detail}",
                                  resp.status_code)
        return resp.json()

    def _pages(self, path: str, key: str, body: dict[str, Any], limit: int) -> list[Mapping[str, Any]]:
        out: list[Mapping[str, Any]] = []
        while len(out) < limit:
            page = self._call("POST", path, json_body={**body, "page_offset": len(out), "page_limit": PAGE})
            items = list(page.get(key) or [])
            out += items
            total = page.get("total_entries")
            if len(items) < PAGE or (total is not None and len(out) >= int(total)):
                break
        return out[:limit]

    # ------------------------------------------------------------------ reads
    def runs(self, dag_ids: Iterable[str], *, states: Iterable[str] | None = None, since: dt.datetime | None = None,
             until: dt.datetime | None = None, limit: int = MAX_ROWS) -> list[Run]:
        """Runs of these DAGs, newest first (by ``run_after``)."""
        dag_ids = sorted(set(dag_ids))
        if not dag_ids:
            return []
        body: dict[str, Any] = {"dag_ids": dag_ids, "order_by": "-run_after"}
        if states is not None:
            body["states"] = sorted(states)
        if since is not None:
            body["run_after_gte"] = _iso(since)
        if until is not None:
            body["run_after_lt"] = _iso(until)
        return [_run(r) for r in self._pages("/api/v2/dags/~/dagRuns/list", "dag_runs", body, limit)]

    def task_instances(self, runs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[Task, ...]]:
        """``{(dag_id, run_id): tasks}`` of these runs."""
        runs = sorted(set(runs))
        out: dict[tuple[str, str], list[Task]] = {run: [] for run in runs}
        for start in range(0, len(runs), 50):  # a few runs per call, ~10 tasks each
            chunk = runs[start:start + 50]
            body = {"dag_ids": sorted({d for d, _ in chunk}), "dag_run_ids": sorted({r for _, r in chunk})}
            for ti in self._pages("/api/v2/dags/~/dagRuns/~/taskInstances/list", "task_instances", body, 50 * 40):
                key = (ti["dag_id"], ti["dag_run_id"])
                if key in out:
                    out[key].append(_task(ti))
        return {key: tuple(tasks) for key, tasks in out.items()}

    def dags_last_run(self, state: str, dag_ids: Iterable[str]) -> set[str]:
        """Which of ``dag_ids`` have their latest run in ``state`` (e.g. ``failed``)."""
        wanted = set(dag_ids)
        found: set[str] = set()
        offset = 0
        while wanted:
            page = self._call("GET", "/api/v2/dags", params={"last_dag_run_state": state, "limit": PAGE, "offset": offset})
            dags = page.get("dags") or []
            found |= {d["dag_id"] for d in dags} & wanted
            offset += len(dags)
            total = page.get("total_entries")
            if len(dags) < PAGE or (total is not None and offset >= int(total)):
                break
        return found

    # ------------------------------------------------------------------ actions
    def clear(self, dag_id: str, run_id: str, task_ids: Iterable[str], *, note: str) -> list[str]:
        """Clear ``task_ids`` of the run and everything downstream of them; the run goes back to
        queued and the scheduler runs them again. Returns the cleared task ids.

        ``only_failed`` is off on purpose: downstream tasks that ran anyway (``record_data_subjects``
        runs after a failure, with nothing to record yet) must run again after the retry.
        """
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": sorted(set(task_ids)), "only_failed": False,
                "only_running": False, "include_downstream": True, "include_upstream": False, "reset_dag_runs": True,
                "note": note[:1000]}
        answer = self._call("POST", f"/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}/clearTaskInstances",
                            json_body=body)
        return sorted({ti["task_id"] for ti in answer.get("task_instances") or []})


def url_of_this_server(scope: Mapping[str, Any], airflow_root: str = "") -> str:
    """The API server a request reached, as seen from inside it: ``http://<local address>:<port>``.

    ``scope["server"]`` is the socket the server accepted the request on, so the view calls
    back over the same local interface, never through a proxy or public name. TLS on the API
    server, or anything unusual: set ``WELFARE_EXCHANGE_AIRFLOW_API_URL``.
    """
    configured = get_settings().airflow_api_url
    if configured:
        return configured
    host, port = scope.get("server") or ("127.0.0.1", 8080)
    host = f"[{host}]" if ":" in str(host) else host
    return f"{scope.get('scheme', 'http')}://{host}:{port}{airflow_root}"


def for_cli(url: str | None = None, username: str | None = None, password: str | None = None) -> AirflowApi:
    """A client for the CLI: URL and credentials given, else from the ``airflow_api`` connection.

    :raises InputError: neither given nor configured (the message says what to set).
    """
    conn_id = get_settings().airflow_api_conn_id
    if not (url and username and password):
        try:
            connection = connections.get(conn_id)
        except Exception as err:  # not defined, or its backend unreachable
            raise InputError(
                f"no Airflow API credentials: create the connection {conn_id!r} (type http: host = the API's URL, "
                f"login and password of an operator; e.g. AIRFLOW_CONN_{conn_id.upper()}) or pass --api-url, --user "
                f"and --password-file ({type(err).__name__})"
            ) from None
        host = connection.host or ""
        if "://" not in host:
            host = f"{connection.schema or 'http'}://{host}" + (f":{connection.port}" if connection.port else "")
        url = url or host or get_settings().airflow_api_url
        username = username or connection.login
        password = password or connection.password
    if not (url and username and password):
        raise InputError(f"the Airflow API connection {conn_id!r} needs a host, a login and a password")
    return AirflowApi.login(url, username, password)
