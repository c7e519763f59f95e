"""A real Airflow on loopback — scheduler, API server, DAG processor, triggerer — for the demo,
``make up`` and the end-to-end test that must go through a real scheduler.

Why the four components and not ``airflow standalone``: standalone gives no way to pass
``--skip-serve-logs``, and the scheduler's and triggerer's log servers bind to *every*
interface (``0.0.0.0``/``[::]``, fixed ports 8793/8794). Running the components ourselves keeps
the whole thing on 127.0.0.1, lets several servers (a test, the demo, ``make up``) run side
by side on their own ports, and gives one log file per component. The API server reads task
logs straight from the shared log folder, so the log servers are not needed.

Example::

    with AirflowServer(home=tmp / "airflow", env={"AIRFLOW__CORE__DAGS_FOLDER": str(dags)}) as af:
        af.wait_for_dag("hello")
        af.unpause("hello")
        run_id = af.trigger("hello")
        assert af.wait_for_run("hello", run_id) == "success"

Everything is development tooling: LocalExecutor, SQLite by default, and either
SimpleAuthManager with the generated admin password (read from the file Airflow writes) or,
with ``auth_manager="fab"``, the FAB auth manager the deployment uses, whose users
:meth:`AirflowServer.create_user` makes with ``airflow users create`` and a generated password
kept in a 0600 file of the home. Passwords are never printed.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from welfare_exchange.exchange.scheduling import WORKER_WAKEUP_SECONDS, derived_parallelism
from welfare_exchange.settings import DEFAULTS, get_settings

HOST = "127.0.0.1"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: The DAG processor's launcher (the project modules preloaded before Airflow's command runs).
DAG_PROCESSOR_MODULE = "welfare_exchange.orchestration.dag_processor"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
AUTH_MANAGERS = {"simple": SIMPLE_AUTH_MANAGER, "fab": FAB_AUTH_MANAGER}
#: Where each auth manager's generated passwords are (``{"user": "password"}``, JSON).
PASSWORDS_FILES = {"simple": "simple_auth_manager_passwords.json.generated", "fab": "fab_passwords.json.generated"}
FINAL_RUN_STATES = frozenset({"success", "failed"})
FINAL_TASK_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
_MIGRATED_MARKER = ".migrated"


class AirflowServerError(RuntimeError):
    """Airflow could not be started, did not answer, or a REST call failed."""


def default_home() -> Path:
    """``$AIRFLOW_HOME`` when set (``scripts/env.sh`` sets it), else the checkout's ``var/airflow``."""
    return Path(os.environ.get("AIRFLOW_HOME") or get_settings().home / "airflow").resolve()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the API server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _airflow_bin() -> str:
    # The venv's own ``airflow``: the one next to this interpreter, so a PATH without the venv
    # (pytest run by hand) still starts the right version.
    candidate = Path(sys.executable).with_name("airflow")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("airflow")
    if not found:
        raise AirflowServerError("the `airflow` command is not installed: run `make install`")
    return found


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow-core")


class AirflowServer:
    """Airflow's four components on 127.0.0.1, with small REST helpers.

    :param home: ``AIRFLOW_HOME`` of the processes (default :func:`default_home`). A folder other
        than the developer's gets its own SQLite metadata DB there, so tests never touch
        ``var/airflow``; it is migrated at :meth:`start` (idempotently).
    :param port: API server port; a free one when ``None``.
    :param env: extra environment for the processes (``AIRFLOW_CONN_*``, ``WELFARE_EXCHANGE_*``,
        ``AIRFLOW__CORE__DAGS_FOLDER``, …). It overrides the defaults set here, except the
        loopback binding, the port and the auth manager, which are always this server's.
    :param auth_manager: ``"simple"`` (SimpleAuthManager, user ``admin``) or ``"fab"`` (the FAB
        auth manager of the deployment; the REST helpers log in as an ``admin`` user with the
        Admin role, created on first use).
    :param reschedule_floor: the shortest pause between rescheduled pokes
        (``WELFARE_EXCHANGE_RESCHEDULE_FLOOR_SECONDS``); the deployment's default unless given.
        Never taken from the caller's environment: under a real scheduler the race it prevents
        is real (:mod:`welfare_exchange.orchestration.sensors.reschedule`), whereas the test
        session turns it off for ``dag.test()``.
    :param preload_dag_processor: start the DAG processor through
        :mod:`welfare_exchange.orchestration.dag_processor` (the project modules the DAG files
        import, imported once instead of in every parse), as the deployment does; ``False`` runs
        Airflow's own command (the benchmark's "today").
    """

    def __init__(self, home: Path | None = None, port: int | None = None, env: dict | None = None,
                 auth_manager: str = "simple", reschedule_floor: float | None = None,
                 preload_dag_processor: bool = True) -> None:
        if auth_manager not in AUTH_MANAGERS:
            raise ValueError(f"auth_manager must be one of {sorted(AUTH_MANAGERS)}, not {auth_manager!r}")
        self.auth_manager = auth_manager
        self.home = Path(home).resolve() if home is not None else default_home()
        self._own_home = home is not None and self.home != default_home()
        self.port = port or free_port()
        self.extra_env = dict(env or {})
        self.reschedule_floor = reschedule_floor
        self.preload_dag_processor = preload_dag_processor
        self._procs: dict[str, subprocess.Popen] = {}
        self._log_handles: list[Any] = []
        self._client: httpx.Client | None = None
        self._token: str | None = None
        # A server left running by a crashed caller would hold the port and the SQLite file.
        atexit.register(_stop_at_exit, weakref.ref(self))

    # ------------------------------------------------------------------ paths and environment
    @property
    def url(self) -> str:
        """Base URL of the API server and UI, e.g. ``http://127.0.0.1:8080``."""
        return f"http://{HOST}:{self.port}"

    @property
    def process_log_dir(self) -> Path:
        """Where each component's stdout/stderr goes (``<home>/process-logs/<component>.log``)."""
        return self.home / "process-logs"

    @property
    def password_file(self) -> Path:
        """The generated passwords (``{"user": "password"}``): SimpleAuthManager writes its own on
        first start; for FAB, :meth:`create_user` keeps them here. Never printed anywhere."""
        return self.home / PASSWORDS_FILES[self.auth_manager]

    def task_log_dir(self) -> Path:
        """The folder of the task logs (``[logging] base_log_folder``): scan it for personal data."""
        return Path(self.environment()["AIRFLOW__LOGGING__BASE_LOG_FOLDER"])

    def environment(self) -> dict[str, str]:
        """The full environment the Airflow processes run with."""
        env = dict(os.environ)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                # The venv's bin first: Airflow starts helpers by name.
                "PATH": os.pathsep.join([str(Path(_airflow_bin()).parent), env.get("PATH", "")]),
                # Airflow's LocalExecutor unless the caller chooses (the bench's "new" policy takes the
                # PreloadingLocalExecutor; its late executor events race a 2 s reschedule poke).
                "AIRFLOW__CORE__EXECUTOR": env.get("AIRFLOW__CORE__EXECUTOR") or "LocalExecutor",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                # LocalExecutor starts `parallelism` worker processes: derived from the cores.
                "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM") or str(derived_parallelism()),
                # A worker is free for the next try within a second of a try's end, not five
                # (welfare_exchange.exchange.scheduling.WORKER_WAKEUP_SECONDS): Airflow's own
                # LocalExecutor does not watch a task's exit (orchestration.task_exit).
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": env.get("AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL")
                or str(WORKER_WAKEUP_SECONDS),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
                # New or changed DAG files are seen within seconds, not minutes.
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "5",
                # The scheduler loop sleeps this long when it had nothing to do (default 1 s);
                # shorter makes trigger → first task and task → next task quicker.
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                # Sensors that can wait in the triggerer do (the SFTP arrival wait): no task
                # process per look, no try used up by waiting.
                "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": env.get("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE") or "True",
            }
        )
        if self._own_home:
            # Never inherit the developer's metadata DB for a private home.
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{self.home / 'airflow.db'}"
        env.update({k: str(v) for k, v in self.extra_env.items()})
        env.update(
            {
                "WELFARE_EXCHANGE_RESCHEDULE_FLOOR_SECONDS": str(
                    self.reschedule_floor if self.reschedule_floor is not None
                    else DEFAULTS["WELFARE_EXCHANGE_RESCHEDULE_FLOOR_SECONDS"]),
                "AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGERS[self.auth_manager],
                # Loopback only, this server's port, and the task runners talk to *this* API.
                "AIRFLOW__API__HOST": HOST,
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            }
        )
        return env

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        """True while every component process is alive."""
        return bool(self._procs) and all(p.poll() is None for p in self._procs.values())

    def migrate(self) -> None:
        """``airflow db migrate`` unless this home was already migrated by this Airflow version."""
        self.home.mkdir(parents=True, exist_ok=True)
        marker = self.home / _MIGRATED_MARKER
        version = _airflow_version()
        if marker.exists() and marker.read_text().strip() == version:
            return
        self.process_log_dir.mkdir(parents=True, exist_ok=True)
        log = self.process_log_dir / "db-migrate.log"
        with open(log, "ab") as fh:
            done = subprocess.run([_airflow_bin(), "db", "migrate"], env=self.environment(), stdin=subprocess.DEVNULL,
                                  stdout=fh, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise AirflowServerError(f"`airflow db migrate` failed (exit {done.returncode}):\n{_tail(log)}")
        marker.write_text(version + "\n")

    def start(self, timeout: float = 120) -> AirflowServer:
        """Migrate, start the four components and return once ``/api/v2/monitor/health`` says the
        metadata DB, scheduler, DAG processor and triggerer are all healthy.

        :raises AirflowServerError: a component exited, the port is taken, or not healthy in time
            (the message carries the tail of the component logs); everything started is stopped.
        """
        if self.running:
            return self
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex((HOST, self.port)) == 0:
                raise AirflowServerError(f"port {self.port} on {HOST} is already in use (another Airflow?)")
        self.migrate()
        self.process_log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for name in COMPONENTS:
                self._spawn(name)
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str) -> None:
        commands = {
            "api-server": ["api-server", "--host", HOST, "--port", str(self.port), "--workers", "1"],
            # --skip-serve-logs: the log servers would listen on all interfaces; see module doc.
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer", "--skip-serve-logs"],
        }
        command = [_airflow_bin(), *commands[name]]
        if name == "dag-processor" and self.preload_dag_processor:
            command = [str(Path(_airflow_bin()).with_name("python")), "-m", DAG_PROCESSOR_MODULE, *commands[name][1:]]
        fh = open(self.process_log_dir / f"{name}.log", "ab")
        self._log_handles.append(fh)
        # Own session per component: stop() signals the whole group (task runners, uvicorn and
        # parsing children included) and Ctrl-C in the terminal reaches only the caller, which
        # then stops us in order.
        self._procs[name] = subprocess.Popen(
            command, env=self.environment(), cwd=self.home, stdin=subprocess.DEVNULL,
            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def restart_component(self, name: str, sig: int = signal.SIGKILL, timeout: float = 120) -> None:
        """Stop one component's whole process group with ``sig`` (default SIGKILL: a crash, its
        running task processes with it), start it again and wait until Airflow is healthy."""
        proc = self._procs[name]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        self._spawn(name)
        self._wait_healthy(timeout)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's task instances as the REST API gives them (state, ``try_number``, ``pid``, …)."""
        resp = self.request("GET", f"/api/v2/dags/{self._q(dag_id)}/dagRuns/{self._q(run_id)}/taskInstances",
                            params={"limit": 1000})
        return resp.json()["task_instances"]

    def stop(self, grace: float = 15.0) -> None:
        """Stop every component: SIGINT to each process group (Airflow's graceful shutdown), then
        SIGTERM after ``grace`` seconds, then SIGKILL. Safe to call twice."""
        procs = dict(self._procs)
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            alive = [p for p in procs.values() if p.poll() is None]
            if not alive:
                break
            for proc in alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(p.poll() is None for p in alive):
                time.sleep(0.2)
        # Children left behind in a group whose leader already exited (e.g. a task runner).
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._procs.clear()
        for fh in self._log_handles:
            fh.close()
        self._log_handles.clear()
        if self._client is not None:
            self._client.close()
            self._client = None
        self._token = None

    def __enter__(self) -> AirflowServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tails(self, lines: int = 20) -> str:
        """The last lines of each component's log, for error messages."""
        return "\n".join(f"--- {name}.log\n{_tail(self.process_log_dir / f'{name}.log', lines)}" for name in COMPONENTS)

    def _check_alive(self) -> None:
        dead = {name: p.returncode for name, p in self._procs.items() if p.poll() is not None}
        if dead:
            raise AirflowServerError(f"Airflow component(s) exited: {dead}\n{self.log_tails()}")

    def health(self) -> dict[str, Any]:
        """``GET /api/v2/monitor/health`` (no authentication needed)."""
        return self._http().get("/api/v2/monitor/health", timeout=5).json()

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Any = "no answer yet"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                last = self.health()
                parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
                if all((last.get(p) or {}).get("status") == "healthy" for p in parts):
                    return
            except (httpx.HTTPError, ValueError) as err:
                last = f"{type(err).__name__}: {err}"
            time.sleep(0.5)
        raise AirflowServerError(f"Airflow not healthy after {timeout:.0f} s (last: {last})\n{self.log_tails()}")

    # ------------------------------------------------------------------ REST
    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=30)
        return self._client

    def _passwords(self) -> dict[str, str]:
        try:
            return json.loads(self.password_file.read_text())
        except FileNotFoundError:
            return {}

    def admin_password(self) -> str:
        """The generated admin password (for code; never print it). With FAB, the ``admin`` user
        (role Admin) is created on first use."""
        if self.auth_manager == "fab":
            return self.create_user("admin", "Admin")
        password = self._passwords().get("admin")
        if password is None:
            raise AirflowServerError(f"{self.password_file} does not exist yet: start the API server first")
        return password

    def create_user(self, username: str, role: str) -> str:
        """A FAB user with ``role`` (Viewer, User, Op, Admin) and a generated password, made with
        ``airflow users create``; returns the password (for code; never print it). A user this
        server already made is not made again.

        The password goes to the command's prompt on stdin, not on its command line (which
        other local users could read); the process has no terminal, so the prompt reads stdin.

        :raises AirflowServerError: not a FAB server, or the command failed (its output's tail).
        """
        if self.auth_manager != "fab":
            raise AirflowServerError("users are created with `airflow users create` only under the FAB auth manager")
        known = self._passwords()
        if username in known:
            return known[username]
        self.migrate()
        password = secrets.token_urlsafe(18)
        command = [_airflow_bin(), "users", "create", "--username", username, "--role", role, "--firstname", username,
                   "--lastname", "welfare-exchange", "--email", f"{username}@example.invalid"]
        self.process_log_dir.mkdir(parents=True, exist_ok=True)
        log = self.process_log_dir / "users-create.log"
        with open(log, "ab") as fh:
            done = subprocess.run(command, env=self.environment(), input=f"{password}\n{password}\n".encode(),
                                  stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, timeout=180, check=False)
        if done.returncode != 0 or f'User "{username}" created' not in _tail(log, 5):
            raise AirflowServerError(f"`airflow users create {username}` failed (exit {done.returncode}):\n{_tail(log)}")
        known[username] = password
        _write_private_json(self.password_file, known)
        return password

    def token(self, refresh: bool = False) -> str:
        """A JWT from ``POST /auth/token`` with the admin user's generated password."""
        if self._token is None or refresh:
            self._token = self.login("admin", self.admin_password())
        return self._token

    def login(self, username: str, password: str) -> str:
        """A JWT for ``username`` from ``POST /auth/token`` (as an API client logs in).

        :raises AirflowServerError: the login was refused (status and body, never the password).
        """
        resp = self._http().post("/auth/token", json={"username": username, "password": password})
        if resp.status_code not in (200, 201):
            raise AirflowServerError(f"POST /auth/token as {username}: HTTP {resp.status_code}: {resp.text[:300]}")
        return resp.json()["access_token"]

    def request(self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None,
                ok: tuple[int, ...] = (200, 201)) -> httpx.Response:
        """An authenticated call to the API; re-logs in once on 401.

        :raises AirflowServerError: the status is not in ``ok`` (message: method, path, status, body).
        """
        resp = None
        for attempt in range(2):
            headers = {"Authorization": f"Bearer {self.token(refresh=attempt > 0)}"}
            resp = self._http().request(method, path, json=json_body, params=params, headers=headers)
            if resp.status_code != 401:
                break
        assert resp is not None
        if resp.status_code not in ok:
            raise AirflowServerError(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp

    @staticmethod
    def _q(value: str) -> str:
        # Run ids look like "manual__2026-11-28T11:20:18.6+00:00": ':' and '+' must be escaped.
        return urllib.parse.quote(value, safe="")

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict[str, Any]:
        """Wait until the DAG processor has parsed ``dag_id`` and the API shows it; returns the DAG.

        :raises AirflowServerError: not there in time; the message lists the import errors.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            resp = self.request("GET", f"/api/v2/dags/{self._q(dag_id)}", ok=(200, 404))
            if resp.status_code == 200:
                return resp.json()
            if time.monotonic() > deadline:
                raise AirflowServerError(f"DAG {dag_id!r} not visible after {timeout:.0f} s; {self._import_errors()}")
            time.sleep(1)

    def _import_errors(self) -> str:
        try:
            errors = self.request("GET", "/api/v2/importErrors").json().get("import_errors", [])
        except AirflowServerError as err:
            return f"import errors unavailable ({err})"
        if not errors:
            return "no import errors (is the DAG file in the DAGs folder, and its snapshot written?)"
        # The last line of each traceback says what broke; the whole trace is in the UI.
        lines = [f"{e.get('filename')}: {(e.get('stack_trace') or '').strip().splitlines()[-1:]}" for e in errors]
        return "import errors: " + "; ".join(lines)

    def unpause(self, dag_id: str) -> None:
        """Unpause a DAG (new DAGs start paused)."""
        self.request("PATCH", f"/api/v2/dags/{self._q(dag_id)}", json_body={"is_paused": False})

    def pause(self, dag_id: str) -> None:
        """Pause a DAG."""
        self.request("PATCH", f"/api/v2/dags/{self._q(dag_id)}", json_body={"is_paused": True})

    def trigger(self, dag_id: str, conf: dict | None = None, logical_date: dt.datetime | str | None = None,
                run_id: str | None = None) -> str:
        """``POST /api/v2/dags/{dag_id}/dagRuns``; returns the run id.

        :param logical_date: ``None`` (a manual run without logical date) or an aware datetime.
        """
        if isinstance(logical_date, dt.datetime):
            if logical_date.tzinfo is None:
                raise ValueError("logical_date must be timezone-aware")
            logical_date = logical_date.isoformat()
        body: dict[str, Any] = {"logical_date": logical_date, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"/api/v2/dags/{self._q(dag_id)}/dagRuns", json_body=body).json()["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        """State of a DAG run: ``queued``, ``running``, ``success`` or ``failed``."""
        return self.request("GET", f"/api/v2/dags/{self._q(dag_id)}/dagRuns/{self._q(run_id)}").json()["state"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """``{task_id: state}`` of a run (``None`` = not scheduled yet; mapped ones as ``task[i]``)."""
        resp = self.request("GET", f"/api/v2/dags/{self._q(dag_id)}/dagRuns/{self._q(run_id)}/taskInstances",
                            params={"limit": 1000})
        states: dict[str, str | None] = {}
        for ti in resp.json()["task_instances"]:
            key = ti["task_id"] if ti.get("map_index", -1) < 0 else f"{ti['task_id']}[{ti['map_index']}]"
            states[key] = ti.get("state")
        return states

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300, *, poll: float = 1.0,
                     on_task_state: Callable[[str, str | None], None] | None = None) -> str:
        """Poll until the run is ``success`` or ``failed``; returns that state.

        :param on_task_state: called as ``(task_id, state)`` whenever a task's state changes
            (the demo prints them).
        :raises AirflowServerError: not finished in time (message: the task states), or a
            component died meanwhile.
        """
        deadline = time.monotonic() + timeout
        seen: dict[str, str | None] = {}
        while True:
            self._check_alive()
            state = self.run_state(dag_id, run_id)
            if on_task_state is not None:
                for task_id, task_state in self.task_states(dag_id, run_id).items():
                    if seen.get(task_id, "") != task_state:
                        seen[task_id] = task_state
                        on_task_state(task_id, task_state)
            if state in FINAL_RUN_STATES:
                return state
            if time.monotonic() > deadline:
                raise AirflowServerError(
                    f"run {run_id} of {dag_id} still {state} after {timeout:.0f} s; tasks: {self.task_states(dag_id, run_id)}"
                )
            time.sleep(poll)

    def wait_for_all_runs(self, dag_id: str, timeout: float = 300, at_least: int = 0) -> dict[str, str]:
        """Wait until a DAG has ``at_least`` runs and every one of them has ended (the ones the
        scheduler started on its own included, e.g. a scheduled DAG's latest interval right after
        unpausing); ``{run_id: state}``."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            runs = self.request("GET", f"/api/v2/dags/{self._q(dag_id)}/dagRuns", params={"limit": 100}).json()
            states = {run["dag_run_id"]: run["state"] for run in runs["dag_runs"]}
            if len(states) >= at_least and all(state in FINAL_RUN_STATES for state in states.values()):
                return states
            if time.monotonic() > deadline:
                raise AirflowServerError(f"runs of {dag_id} still going after {timeout:.0f} s: {states}")
            time.sleep(1.0)

    def why(self, dag_id: str, run_id: str, lines: int = 12) -> str:
        """Why a run ended as it did, for a test's assertion message: the task states and the
        scheduler's last error lines (state mismatches, killed tries), never a task's data."""
        errors = [line[:300] for line in _tail(self.process_log_dir / "scheduler.log", 2000).splitlines()
                  if "[error" in line or "UP_FOR_RETRY" in line or "Marking task as FAILED" in line]
        return f"tasks: {self.task_states(dag_id, run_id)}; scheduler: " + "\n".join(errors[-lines:])

    def clear_task(self, dag_id: str, run_id: str, task_id: str, downstream: bool = False) -> list[str]:
        """Clear one task instance of a run (whatever its state), as an operator does in the UI;
        the run goes back to ``queued`` and the scheduler runs the task again. Returns the
        cleared task ids.

        :param downstream: also clear the tasks downstream of it.
        """
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": [task_id],
            "only_failed": False,
            "only_running": False,
            "include_downstream": downstream,
            "include_upstream": False,
            "reset_dag_runs": True,
        }
        resp = self.request("POST", f"/api/v2/dags/{self._q(dag_id)}/clearTaskInstances", json_body=body)
        return sorted(ti["task_id"] for ti in resp.json()["task_instances"])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            return "\n".join(fh.read().decode(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _write_private_json(path: Path, data: Any) -> None:
    # Readable by its owner only from the first byte on, and replaced atomically.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _stop_at_exit(ref: weakref.ref) -> None:
    server = ref()
    if server is not None and server._procs:
        server.stop(grace=5.0)
