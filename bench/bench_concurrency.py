"""Many municipalities at once: a batch of Method 1 exchanges through a real scheduler.

For each back end — ``sqlite`` (LocalExecutor, Airflow and project DB on SQLite), ``postgres``
(LocalExecutor, both on PostgreSQL) and ``celery`` (two ``airflow celery worker`` processes,
Redis broker, PostgreSQL) — and for each batch size (20 and 50 municipalities: per 20, 17
requests of 2,000 rows and 3 of 50,000, against a 200,000-child store), every municipality drops
its request into its SFTP inbox at the same moment and every run is triggered within a second.
Measured, in the same run, for

* **today**: parallelism 4 (2 Celery processes per worker), Airflow's default weight rule
  (``downstream``: breadth-first), and
* **new**: parallelism derived from the cores (:func:`~welfare_exchange.exchange.scheduling.derived_parallelism`;
  per Celery worker half of it, both workers sharing this host), the depth-first weight rule, the
  preloading executor (or Celery worker), whose workers are free the moment a try's process
  exits (:mod:`welfare_exchange.orchestration.task_exit`; the supervisor wakes every 5 s, as
  Airflow's does, and today a finished try holds its worker until then), and
  the DAG processor launched with the project's modules preloaded
  (:mod:`welfare_exchange.orchestration.dag_processor`; Airflow's own command today),

the figures: delivered, exactly once (one delivery side effect per exchange, one new result per
outbox), wall time (first trigger → last delivery), p50/p95 of upload → delivery (all, and the
2,000-row ones), CPU busy (whole machine), CPU-seconds per exchange (all cores, everything that
ran) and peak memory; every try's times go to ``timeline-<batch>.json`` in the run's folder. A solo 2,000-row exchange is timed
after the batches in the new configuration (warm, as the batch's were). Checked as ratios: batch ≤ 0.5× today's; the small exchanges'
p50 ≤ 2× the solo time.

Both Celery workers run on this host and share its staging folder (a deployment over hosts
shares staging as README "Deployment" says). The machine is shared: other work competes for its
2 cores, so read the ratios, not the seconds. On SQLite under such load Airflow's own
DAG processor or triggerer can die of "database is locked": that configuration is reported as
failed and the others still run.

Knobs (environment): ``WELFARE_EXCHANGE_BENCH_CONCURRENCY_SIZES`` (``20,50``),
``…_BACKENDS`` (``sqlite,postgres,celery``), ``…_SCALE`` (``1``: rows and store size multiplied
by it, e.g. ``0.05`` for a quick run), ``…_POLICIES`` (``today,new``), ``…_PARALLELISM`` (the new
policy's slots; derived from the cores when unset), ``…_WAKEUP`` (the new policy's supervisor
wake-up, seconds; Airflow's 5 when unset, as in the image). ``WELFARE_EXCHANGE_TASK_EXIT_WATCH=false``
measures the new policy without the exit watch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import pathlib
import secrets
import shutil
import signal
import statistics
import subprocess
import time
import uuid

import sqlalchemy as sa
import xlsxwriter

from bench.common import MemorySampler, bench_home, cached_store, process_tree
from welfare_exchange.settings import REPO_ROOT

SEED = 3
SMALL_ROWS, LARGE_ROWS, STORE_CHILDREN = 2_000, 50_000, 200_000
PG_ADMIN_URL = os.environ.get("WELFARE_EXCHANGE_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("WELFARE_EXCHANGE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")


def _knob(name: str, default: str) -> str:
    return os.environ.get(f"WELFARE_EXCHANGE_BENCH_CONCURRENCY_{name}") or default


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# ------------------------------------------------------------------ databases


def _pg(statement: str) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(statement))
    admin.dispose()


def _pg_url(name: str) -> str:
    return sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def _pg_store_template(children: int) -> str:
    """A PostgreSQL database holding the synthetic store, made once and cloned per configuration."""
    from welfare_exchange.db import upgrade
    from welfare_exchange.db.engine import dispose_engines
    from welfare_exchange.entitlements import generate

    name = f"wx_bench_store_{children}_s{SEED}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
        ready = exists and conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n AND datistemplate"),
                                        {"n": name}).scalar()
        if exists and not ready:  # an interrupted generation
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        if not ready:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = _pg_url(name)
    upgrade(url)
    if not ready:
        print(f"   generating a {children:,}-child store in PostgreSQL (cached as template {name})", flush=True)
        generate(children, SEED, url=url, progress=False)
        _pg(f"ALTER DATABASE \"{name}\" IS_TEMPLATE true")
    dispose_engines()
    return name


def _project_db(backend: str, run_dir: pathlib.Path, children: int) -> tuple[str, str | None]:
    """The run's project database (the store included): (url, PostgreSQL database to drop or None)."""
    from welfare_exchange.db import upgrade

    if backend == "sqlite":
        shutil.copy(cached_store(children, SEED), run_dir / "project.db")
        url = f"sqlite:///{run_dir / 'project.db'}"
        upgrade(url)
        return url, None
    template = _pg_store_template(children)
    name = f"wx_bench_{uuid.uuid4().hex[:10]}"
    _pg(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    url = _pg_url(name)
    upgrade(url)
    return url, name


# ------------------------------------------------------------------ requests


def _mix(n: int) -> list[int]:
    """Row counts of a batch of ``n``: 3 of every 20 are large (at least one), the rest small."""
    large = max(1, round(n * 3 / 20))
    return [LARGE_ROWS] * large + [SMALL_ROWS] * (n - large)


def _request(url: str, nis: str, rows: int, tag: str, password: str) -> bytes:
    """An encrypted request of ``rows`` children (the municipality's own, topped up from the store)."""
    from welfare_exchange.db import session_scope
    from welfare_exchange.entitlements.store import sample_children
    from welfare_exchange.intake import encrypt_agile

    with session_scope(url) as session:
        numbers = sample_children(session, nis, rows, SEED)
        if len(numbers) < rows:
            numbers += session.execute(
                sa.text("SELECT insz FROM child WHERE nis_code != :n ORDER BY id LIMIT :k OFFSET :o"),
                {"n": nis, "k": rows - len(numbers), "o": int(nis) % 1000},
            ).scalars().all()
    buffer = io.BytesIO()
    book = xlsxwriter.Workbook(buffer, {"in_memory": True, "constant_memory": True})
    sheet = book.add_worksheet("Kinderen")
    sheet.write_row(0, 0, ["Rijksregisternummer", "Opmerking"])
    for r, number in enumerate(numbers, start=1):
        sheet.write_string(r, 0, number)
        sheet.write_string(r, 1, f"{tag} {r}")  # a different file per batch: never a duplicate
    book.close()
    return encrypt_agile(buffer.getvalue(), password)


# ------------------------------------------------------------------ one configuration


class Cluster:
    """Airflow (LocalExecutor or Celery with two workers) over one SFTP server and project DB."""

    def __init__(self, backend: str, policy: str, run_dir: pathlib.Path, project_url: str, env: dict) -> None:
        from welfare_exchange.devtools.airflow_server import AirflowServer
        from welfare_exchange.exchange.scheduling import derived_parallelism

        self.backend, self.policy, self.run_dir = backend, policy, run_dir
        self.parallelism = 4 if policy == "today" else int(_knob("PARALLELISM", "0")) or derived_parallelism()
        self.worker_concurrency = max(2, self.parallelism // 2)
        self.metadata_db: str | None = None
        self.queue = f"wx_bench_{uuid.uuid4().hex[:8]}"
        self.workers: list[subprocess.Popen] = []
        env = {**env, "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
               "WELFARE_EXCHANGE_TASK_WEIGHT_RULE": "downstream" if policy == "today" else "upstream",
               # Today: Airflow's own LocalExecutor, nothing preloaded (the Celery run sets its own).
               "AIRFLOW__CORE__EXECUTOR": "LocalExecutor" if policy == "today"
               else "welfare_exchange.orchestration.executor.PreloadingLocalExecutor"}
        # Airflow's 5 s supervisor wake-up in both, as in the image: the new policy's workers watch
        # the task's exit instead (orchestration.task_exit; the knob weighs a shorter wake-up).
        env["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"] = "5" if policy == "today" else _knob("WAKEUP", "5")
        if backend in ("postgres", "celery"):
            self.metadata_db = f"wx_bench_af_{uuid.uuid4().hex[:10]}"
            _pg(f'CREATE DATABASE "{self.metadata_db}"')
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = _pg_url(self.metadata_db)
        if backend == "celery":
            backend_url = sa.engine.make_url(_pg_url(self.metadata_db)).set(drivername="postgresql")
            env.update({
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{backend_url.render_as_string(hide_password=False)}",
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            })
            if policy != "today":
                env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] = "welfare_exchange.orchestration.celery_config.CELERY_CONFIG"
        # Today: Airflow's own DAG processor command (every parse imports the project again).
        self.airflow = AirflowServer(home=run_dir / "airflow", env=env, preload_dag_processor=policy != "today")

    def start(self) -> Cluster:
        self.airflow.start(timeout=300)
        if self.backend == "celery":
            airflow_bin = shutil.which("airflow", path=self.airflow.environment()["PATH"])
            for i in (1, 2):
                log = self.airflow.process_log_dir / f"celery-worker-{i}.log"
                with open(log, "ab") as fh:
                    self.workers.append(subprocess.Popen(
                        [airflow_bin, "celery", "worker", "--queues", self.queue, "--concurrency",
                         str(self.worker_concurrency), "--celery-hostname", f"{self.queue}-{i}@%h", "--skip-serve-logs",
                         "--without-gossip", "--without-mingle"],
                        env=self.airflow.environment(), cwd=self.run_dir, stdin=subprocess.DEVNULL, stdout=fh,
                        stderr=subprocess.STDOUT, start_new_session=True))
                deadline = time.monotonic() + 120
                while "ready" not in log.read_text(errors="replace"):
                    if self.workers[-1].poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"Celery worker {i} did not start: {log.read_text(errors='replace')[-2000:]}")
                    time.sleep(0.5)
        return self

    def components(self) -> dict[str, int]:
        """``{component: pid}``: Airflow's processes and the Celery workers."""
        return {**{name: p.pid for name, p in self.airflow._procs.items()},
                **{f"celery-worker-{i}": w.pid for i, w in enumerate(self.workers, 1)}}

    def pids(self) -> list[int]:
        return list(self.components().values())

    def cpu_seconds(self) -> dict[str, float]:
        """CPU-seconds used so far by each component with everything under it: its live
        processes, and the task processes they have already reaped (children's times)."""
        import psutil

        used = {}
        for name, pid in self.components().items():
            used[name] = 0.0
            for proc in process_tree(pid):
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    used[name] += t.user + t.system + t.children_user + t.children_system
        return used

    def stop(self) -> None:
        for worker in self.workers:
            for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
                if worker.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(worker.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.wait(wait)
        self.airflow.stop()
        if self.backend == "celery":
            import redis

            with contextlib.suppress(redis.RedisError):
                client = redis.Redis.from_url(REDIS_URL)
                for key in list(client.scan_iter(match=f"*{self.queue}*")):
                    client.delete(key)
        if self.metadata_db:
            _pg(f'DROP DATABASE IF EXISTS "{self.metadata_db}" WITH (FORCE)')


def _run_batch(cluster: Cluster, server, project_url: str, entries: list[dict], rows: list[int], tag: str,
               password: str) -> dict:
    """Drop one request per entry at the same moment, trigger every run, wait; the figures."""
    import psutil

    from welfare_exchange.db import session_scope
    from welfare_exchange.db.models import Exchange, SideEffect
    from welfare_exchange.orchestration.dag_factory import build_method1_dag, method1_dag_id

    af = cluster.airflow
    files = {e["nis_code"]: _request(project_url, e["nis_code"], r, tag, password) for e, r in zip(entries, rows)}
    outbox_before = {e["nis_code"]: len(_outbox(server, e["nis_code"])) for e in entries}
    sampler = MemorySampler(cluster.pids)
    sampler.start()
    cpu_before, components_before = psutil.cpu_times(), cluster.cpu_seconds()
    uploaded = {}
    for e in entries:  # "at the same moment": one after the other as fast as SFTP takes them
        server.drop_request(e["nis_code"], files[e["nis_code"]], f"aanvraag_{tag}.xlsx")
        uploaded[e["nis_code"]] = time.time()
    runs = {}
    first_trigger = time.time()
    # Distinct logical dates, in trigger order: the scheduler's tie-break between equal weights.
    base = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=1)
    for i, e in enumerate(entries):
        runs[e["nis_code"]] = _trigger(af, method1_dag_id(e), base + dt.timedelta(milliseconds=i))
    trigger_spread = time.time() - first_trigger
    states = {nis: af.wait_for_run(method1_dag_id(e), runs[nis], timeout=3600, poll=2)
              for e in entries for nis in [e["nis_code"]]}
    cpu_after, components_after = psutil.cpu_times(), cluster.cpu_seconds()
    sampler.stop()
    idle = cpu_after.idle + cpu_after.iowait - cpu_before.idle - cpu_before.iowait
    busy = 1 - idle / (sum(cpu_after) - sum(cpu_before))
    busy_cpu_seconds = sum(cpu_after) - sum(cpu_before) - idle  # all cores: what the batch cost the machine

    delivered_at, tries, slot_seconds = {}, 0, []
    phases: dict[str, list[float]] = {name: [] for name in PHASES}
    upstream = {t.task_id: t.upstream_task_ids for t in build_method1_dag(entries[0]).tasks}
    timeline = []
    for e, size in zip(entries, rows):
        dag_id, run_id = method1_dag_id(e), runs[e["nis_code"]]
        tis = af.request("GET", f"/api/v2/dags/{af._q(dag_id)}/dagRuns/{af._q(run_id)}/taskInstances",
                         params={"limit": 100}).json()["task_instances"]
        timeline.append({"rows": size, "uploaded": uploaded[e["nis_code"]], "tasks": [
            {k: ti.get(k) for k in ("task_id", "try_number", "state", "scheduled_when", "queued_when", "start_date",
                                    "end_date", "priority_weight")} for ti in tis]})
        _step_phases(tis, upstream, phases)
        for ti in tis:
            tries += ti.get("try_number") or 0
            if ti["task_id"] not in ("protocol_gate", "wait_for_request") and ti.get("duration"):
                slot_seconds.append(ti["duration"])
            if ti["task_id"] == "deliver_result" and ti["state"] == "success":
                delivered_at[e["nis_code"]] = dt.datetime.fromisoformat(ti["end_date"]).timestamp()
    latency = {nis: delivered_at[nis] - uploaded[nis] for nis in delivered_at}
    small = [latency[e["nis_code"]] for e, r in zip(entries, rows) if r == min(rows) and e["nis_code"] in latency]
    run_ids = set(runs.values())
    with session_scope(project_url) as session:
        exchanges = [x for x in session.scalars(sa.select(Exchange)) if x.run_id in run_ids]
        ids = [x.id for x in exchanges]
        deliveries = session.execute(
            sa.select(SideEffect.exchange_id, sa.func.count()).where(SideEffect.kind == "delivered",
                                                                     SideEffect.exchange_id.in_(ids))
            .group_by(SideEffect.exchange_id)).all()
    new_results = {e["nis_code"]: len(_outbox(server, e["nis_code"])) - outbox_before[e["nis_code"]] for e in entries}
    # Every try's times, to see where an exchange's time went (no personal data: task ids and times).
    (cluster.run_dir / f"timeline-{tag}.json").write_text(json.dumps(
        {"first_trigger": first_trigger, "runs": timeline}, indent=1))
    return {
        "exchanges": len(entries), "rows": sorted(set(rows)), "runs_succeeded": sum(s == "success" for s in states.values()),
        "delivered": sum(x.state == "delivered" for x in exchanges),
        "exactly_once": (len(deliveries) == len(entries) and all(c == 1 for _, c in deliveries)
                         and all(v == 1 for v in new_results.values())),
        "trigger_spread_seconds": round(trigger_spread, 2),
        "wall_seconds": round(max(delivered_at.values(), default=float("nan")) - first_trigger, 1),
        "p50_seconds": round(statistics.median(latency.values()), 1) if latency else None,
        "p95_seconds": round(_percentile(list(latency.values()), 0.95), 1),
        "small_p50_seconds": round(statistics.median(small), 1) if small else None,
        "small_p95_seconds": round(_percentile(small, 0.95), 1),
        "task_tries": tries, "mean_try_seconds": round(statistics.mean(slot_seconds), 2) if slot_seconds else None,
        "cpu_busy_percent": round(100 * busy), "cpu_seconds_per_exchange": round(busy_cpu_seconds / len(entries), 2),
        # Where the CPU went (the task processes count under the scheduler, or a Celery worker).
        "cpu_seconds_by_component": {name: round(components_after[name] - components_before.get(name, 0.0), 1)
                                     for name in components_after}, "peak_memory_mb": sampler.report(),
        "step_phase_p50_seconds": {name: round(statistics.median(v), 2) if v else None for name, v in phases.items()},
    }


#: Where a step's time goes, from the moment the last step before it ended: the scheduler noticing
#: and scheduling it, waiting for a slot (queued), the executor starting the try, the try itself.
PHASES = ("to_scheduled", "to_queued", "to_started", "try")


def _step_phases(tis: list[dict], upstream: dict[str, set[str]], phases: dict[str, list[float]]) -> None:
    """Add one run's step phases (seconds) to ``phases``; ``upstream`` is the DAG's own
    ``{task_id: upstream task ids}``, so the phases follow the DAG as it is."""
    def ts(value):
        return dt.datetime.fromisoformat(value).timestamp() if value else None

    by_id = {ti["task_id"]: ti for ti in tis}
    for step in tis:
        before = [by_id.get(task_id) for task_id in upstream.get(step["task_id"], ())]
        if not before or None in before or (step.get("try_number") or 0) != 1:  # a retry says nothing about the path
            continue
        marks = [max((ts(b.get("end_date")) or float("inf")) for b in before), ts(step.get("scheduled_when")),
                 ts(step.get("queued_when")), ts(step.get("start_date")), ts(step.get("end_date"))]
        if None in marks or marks[0] == float("inf"):
            continue
        for name, start, end in zip(PHASES, marks, marks[1:]):
            phases[name].append(end - start)


def _trigger(af, dag_id: str, logical_date: dt.datetime) -> str:
    """Trigger a run; on SQLite the API server may answer 500 while the scheduler holds the write
    lock ("database is locked"): try again, as a client would."""
    from welfare_exchange.devtools.airflow_server import AirflowServerError

    for attempt in range(10):
        try:
            return af.trigger(dag_id, logical_date=logical_date)
        except AirflowServerError as err:
            if "HTTP 500" not in str(err) or attempt == 9:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def _outbox(server, nis: str) -> list[str]:
    folder = server.account(nis).local_dir("outbox")
    return [p.name for p in folder.iterdir() if p.name.endswith(".xlsx")] if folder.exists() else []


def run_configuration(backend: str, policy: str, sizes: list[int], scale: float, solo: bool) -> dict:
    """One back end under one policy: a fresh project DB and Airflow, then each batch size in turn."""
    from welfare_exchange import audit
    from welfare_exchange.db import session_scope
    from welfare_exchange.db.engine import dispose_engines
    from welfare_exchange.devtools.sftp_server import SftpServer, chroot_capable_root
    from welfare_exchange.municipalities import MUNICIPALITIES
    from welfare_exchange.orchestration.dag_factory import method1_dag_id
    from welfare_exchange.protocols import create, registry, transition

    children = max(1_000, round(STORE_CHILDREN * scale))
    run_dir = bench_home() / "concurrency" / f"{backend}-{policy}-{int(time.time())}"
    run_dir.mkdir(parents=True)
    project_url, project_db = _project_db(backend, run_dir, children)
    snapshot = run_dir / "registry_snapshot.json"
    password = secrets.token_urlsafe(12)
    count = max(sizes) + 1  # the first one is the solo exchange
    chosen = sorted(MUNICIPALITIES, key=lambda m: -m.weight)[:count]
    env_over = {"WELFARE_EXCHANGE_DB_URL": project_url, "WELFARE_EXCHANGE_REGISTRY_SNAPSHOT": str(snapshot),
                "WELFARE_EXCHANGE_STAGING_DIR": str(run_dir / "staging")}
    saved = {k: os.environ.get(k) for k in env_over}
    os.environ.update(env_over)
    user = audit.Actor.current_user()
    with session_scope(project_url) as session:
        for m in chosen:
            protocol = create(session, nis_code=m.nis_code, municipality=m.name, kind="method1", channel="sftp",
                              key_connection="key_bench", college_decision_ref="CB/bench",
                              college_decision_date=dt.date(2026, 9, 1), dpo_advice_date=dt.date(2026, 9, 2), actor=user)
            for action in ("submit", "advise", "sign"):
                transition(session, protocol.id, action, actor=user, on=dt.date(2026, 10, 1))
        registry.write_snapshot(session, snapshot)
        entries = {p["nis_code"]: p for p in registry.snapshot(session)}
    entries = [entries[m.nis_code] for m in chosen]
    server = SftpServer(chroot_capable_root(run_dir / "sftp")).start()
    cluster = None
    result: dict = {"backend": backend, "policy": policy}
    try:
        server.add_municipalities([e["nis_code"] for e in entries])
        env = {**env_over, **dict(server.env_var(e["nis_code"]) for e in entries),
               "AIRFLOW_CONN_KEY_BENCH": json.dumps({"conn_type": "generic", "password": password}),
               "WELFARE_EXCHANGE_SETTLE_SECONDS": "1", "WELFARE_EXCHANGE_POKE_INTERVAL_SECONDS": "2",
               "WELFARE_EXCHANGE_RETRY_DELAY_SECONDS": "5", "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
               "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
               # The deployment's DAG parsing (Airflow's defaults, as the compose file runs it), not
               # the dev servers' 5 s: at 5 s the DAG processor took 18 % of the machine in a batch.
               "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
               "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "300",
               "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "30"}
        cluster = Cluster(backend, policy, run_dir, project_url, env).start()
        result.update(parallelism=cluster.parallelism,
                      worker_concurrency=cluster.worker_concurrency if backend == "celery" else None)
        for e in entries:  # only these run: the feeds and retention DAGs stay paused
            cluster.airflow.wait_for_dag(method1_dag_id(e), timeout=300)
            cluster.airflow.unpause(method1_dag_id(e))
        small = max(1, round(SMALL_ROWS * scale))
        large = max(small + 1, round(LARGE_ROWS * scale))
        for size in sizes:
            rows = [large if r == LARGE_ROWS else small for r in _mix(size)]
            figures = _run_batch(cluster, server, project_url, entries[1:size + 1], rows, f"b{size}", password)
            result[str(size)] = figures
            print(f"   {backend:<8} {policy:<5} {size} exchanges (parallelism {cluster.parallelism}): "
                  f"{figures['delivered']}/{size} delivered, exactly once {figures['exactly_once']}, "
                  f"wall {figures['wall_seconds']} s, p50 {figures['p50_seconds']} s, p95 {figures['p95_seconds']} s, "
                  f"small p50 {figures['small_p50_seconds']} s, try {figures['mean_try_seconds']} s, "
                  f"CPU busy {figures['cpu_busy_percent']} % ({figures['cpu_seconds_per_exchange']} CPU-s an exchange), peak {figures['peak_memory_mb']['all_processes_own']} MB "
                  f"(all processes' own); a step's p50 phases (s) {figures['step_phase_p50_seconds']}; "
                  f"CPU-s by component {figures['cpu_seconds_by_component']}", flush=True)
        if solo:  # after the batches: a warm scheduler, as the batch's exchanges had
            solo_figures = _run_batch(cluster, server, project_url, entries[:1], [small], "solo", password)
            result["solo"] = solo_figures
            print(f"   {backend:<8} {policy:<5} solo {small:,}-row exchange: {solo_figures['p50_seconds']} s "
                  "upload → delivery", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
        server.stop()
        dispose_engines()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if project_db:
            _pg(f'DROP DATABASE IF EXISTS "{project_db}" WITH (FORCE)')
    return result


def main() -> dict:
    sizes = [int(s) for s in _knob("SIZES", "20,50").split(",")]
    backends = _knob("BACKENDS", "sqlite,postgres,celery").split(",")
    policies = _knob("POLICIES", "today,new").split(",")
    scale = float(_knob("SCALE", "1"))
    print(f"  batches of {sizes} municipalities on {backends}; rows and store × {scale}; "
          f"{os.cpu_count()} cores (shared with other work)", flush=True)
    results: dict = {"sizes": sizes, "scale": scale, "cores": os.cpu_count()}
    checks = []
    partial = bench_home() / "concurrency" / "partial.json"
    for backend in backends:
        figures = {}
        for policy in policies:
            try:
                figures[policy] = run_configuration(backend, policy, sizes, scale, solo=policy == "new")
            except Exception as err:  # one back end down (e.g. SQLite locked under load): the others still run
                print(f"   {backend:<8} {policy:<5} FAILED: {str(err).splitlines()[0][:300]}", flush=True)
                figures[policy] = {"error": str(err)[:2000]}
            results[backend] = figures
            partial.write_text(json.dumps(results, indent=2, default=str))  # a long run's figures so far
        if "error" in figures.get("new", {}):
            checks.append((False, f"{backend}: the new configuration failed: {figures['new']['error'][:200]}"))
            continue
        if {"today", "new"} <= figures.keys() and "error" not in figures["today"]:
            for size in sizes:
                today, new = figures["today"][str(size)], figures["new"][str(size)]
                ratio = new["wall_seconds"] / today["wall_seconds"]
                line = f"{backend} {size}: batch {new['wall_seconds']} s vs today's {today['wall_seconds']} s → {ratio:.2f}× (target ≤ 0.5×)"
                checks.append((ratio <= 0.5, line))
        if "new" in figures:
            solo = figures["new"]["solo"]["p50_seconds"]
            for size in sizes:
                small = figures["new"][str(size)]["small_p50_seconds"]
                ratio = small / solo
                checks.append((ratio <= 2.0, f"{backend} {size}: small exchanges' p50 {small} s vs solo {solo} s → "
                                             f"{ratio:.2f}× (target ≤ 2×)"))
            for size in sizes:
                new = figures["new"][str(size)]
                checks.append((new["delivered"] == size and new["exactly_once"],
                               f"{backend} {size}: {new['delivered']}/{size} delivered, exactly once: {new['exactly_once']}"))
    for ok, line in checks:
        print(f"  [{'met' if ok else 'NOT MET'}] {line}")
    results["targets"] = [{"met": ok, "check": line} for ok, line in checks]
    return results
