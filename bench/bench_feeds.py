"""One month of structural feeds for all 285 municipalities over a 2,000,000-child store,
through a real scheduler.

What runs: the ``structural_feeds`` DAG on a real Airflow (scheduler, API server, DAG processor,
triggerer — :class:`welfare_exchange.devtools.airflow_server.AirflowServer`, LocalExecutor,
parallelism 4) for the interval October 2026, delivering over SFTP to one real OpenSSH server
on loopback with 285 chrooted accounts (one per municipality, each with its own key pair and
pinned host key — the production path, not a local-file shortcut). The run is created by the
scheduler itself (catch-up from ``WELFARE_EXCHANGE_FEED_START_DATE=2026-10-01``), after an
``entitlement_snapshot`` Asset event posted through the REST API, so the snapshot wait passes
as it would after a real import. The Deadline Alert is attached (the scheduler path).

Figures: the run's wall time (scheduler's start → end), per task, per municipality (the mapped
``deliver_feed`` durations: min / median / p95 / max), the change detection over the whole
store, and peak memory (every Airflow process sampled every 0.5 s: the largest single process,
its own memory and its RSS, and the whole tree's own memory; see ``bench.common.MemorySampler``). Target: the whole run under 10 minutes on 2 cores.

Environment: ``WELFARE_EXCHANGE_BENCH_FEED_CHILDREN`` (default 2,000,000) and
``WELFARE_EXCHANGE_BENCH_FEED_SEED`` (1). The generated store is cached as
``var/bench/store-<children>-seed<seed>.db`` (shared with bench_method1) (generating 2 M children takes under a minute on SQLite)
and copied for each run, so the cache never holds protocols, ledger or audit rows.
Needs root (the SFTP server creates one system account per municipality), like the tests.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import statistics
import time

from bench.common import ROOT, MemorySampler, bench_home, cached_store

DAG_ID = "structural_feeds"
INTERVAL = ("2026-10-01", "2026-11-01")


def _seconds(ti: dict) -> float | None:
    if ti.get("duration") is not None:
        return float(ti["duration"])
    return None


def main() -> dict:
    from welfare_exchange import audit
    from welfare_exchange.db import session_scope
    from welfare_exchange.db.engine import dispose_engines
    from welfare_exchange.devtools.airflow_server import AirflowServer
    from welfare_exchange.devtools.sftp_server import SftpServer, chroot_capable_root
    from welfare_exchange.entitlements import MUNICIPALITIES
    from welfare_exchange.protocols import create, registry, transition

    children = int(os.environ.get("WELFARE_EXCHANGE_BENCH_FEED_CHILDREN", 2_000_000))
    seed = int(os.environ.get("WELFARE_EXCHANGE_BENCH_FEED_SEED", 1))
    store = cached_store(children, seed)

    work = bench_home() / "feeds-run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    db = work / "project.db"
    shutil.copyfile(store, db)
    env = {
        "WELFARE_EXCHANGE_DB_URL": f"sqlite:///{db}",
        "WELFARE_EXCHANGE_STAGING_DIR": str(work / "staging"),
        "WELFARE_EXCHANGE_REGISTRY_SNAPSHOT": str(work / "registry_snapshot.json"),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # A fresh server per run: an outbox kept from an earlier run holds files of the same names,
    # which the delivery rightly refuses to overwrite.
    sftp_root = chroot_capable_root(work / "sftp")
    shutil.rmtree(sftp_root, ignore_errors=True)
    sftp = SftpServer(sftp_root)
    server = None
    try:
        # 285 signed structural protocols, each with its own SFTP account and file password.
        for m in MUNICIPALITIES:
            sftp.add_municipality(m.nis_code)
        sftp.start()
        actor = audit.Actor.current_user()
        with session_scope() as session:
            for m in MUNICIPALITIES:
                p = create(
                    session, nis_code=m.nis_code, municipality=m.name, kind="structural", channel="sftp",
                    key_connection=f"key_{m.nis_code}", college_decision_ref="CB/2026/1",
                    college_decision_date=dt.date(2026, 1, 5), dpo_advice_date=dt.date(2026, 1, 15),
                    valid_from=dt.date(2026, 1, 1), actor=actor,
                )
                for action in ("submit", "advise", "sign"):
                    transition(session, p.id, action, actor=actor, on=dt.date(2026, 2, 1))
            registry.write_snapshot(session)
        dispose_engines()
        passwords = {m.nis_code: secrets.token_urlsafe(12) for m in MUNICIPALITIES}
        for m in MUNICIPALITIES:
            name, value = sftp.env_var(m.nis_code)
            env[name] = value
            env[f"AIRFLOW_CONN_KEY_{m.nis_code}"] = json.dumps({"conn_type": "generic", "password": passwords[m.nis_code]})
        env.update({
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PARALLELISM": "4",
            "WELFARE_EXCHANGE_FEED_START_DATE": INTERVAL[0],
            "WELFARE_EXCHANGE_FEED_CATCHUP": "true",
            "WELFARE_EXCHANGE_FEED_SNAPSHOT_POLICY": "wait",
            "WELFARE_EXCHANGE_POKE_INTERVAL_SECONDS": "5",
            "WELFARE_EXCHANGE_FEED_MAX_ACTIVE_TASKS": "4",
        })
        server = AirflowServer(home=work / "airflow", env=env)
        print("   starting Airflow (scheduler, API server, DAG processor, triggerer)", flush=True)
        server.start(timeout=240)
        server.wait_for_dag(DAG_ID, timeout=240)
        assets = server.request("GET", "/api/v2/assets", params={"uri_pattern": "entitlement-store"}).json()["assets"]
        server.request("POST", "/api/v2/assets/events", json_body={"asset_id": assets[0]["id"], "extra": {"bench": True}})
        sampler = MemorySampler(lambda: [p.pid for p in server._procs.values()], interval=0.5)
        sampler.start()
        server.unpause(DAG_ID)  # the scheduler creates October's run itself (catch-up)
        run_id, waited = None, time.monotonic()
        while run_id is None:
            runs = server.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
            run_id = runs[0]["dag_run_id"] if runs else None
            if time.monotonic() - waited > 120:
                raise RuntimeError("the scheduler created no run within 120 s")
            time.sleep(1)
        state = server.wait_for_run(DAG_ID, run_id, timeout=1800, poll=5)
        sampler.stop()
        run = server.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()
        tis, offset = [], 0
        while True:
            page = server.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances",
                                  params={"limit": 100, "offset": offset}).json()["task_instances"]
            tis += page
            offset += len(page)
            if len(page) < 100:
                break
        delivered = sum(1 for m in MUNICIPALITIES if any(n.endswith(".xlsx") for n in os.listdir(sftp.account(m.nis_code).local_dir("outbox"))))
        per_task = {ti["task_id"]: _seconds(ti) for ti in tis if ti.get("map_index", -1) < 0}
        per_municipality = sorted(s for ti in tis if ti["task_id"] == "deliver_feed" and (s := _seconds(ti)) is not None)
        states = {}
        for ti in tis:
            states[ti["state"]] = states.get(ti["state"], 0) + 1
        started = dt.datetime.fromisoformat(run["start_date"])
        ended = dt.datetime.fromisoformat(run["end_date"])
        from welfare_exchange.db.models import Exchange

        with session_scope() as session:
            rows = sum((e.counts or {}).get("rows", 0) for e in session.query(Exchange).all())
        result = {
            "children": children,
            "seed": seed,
            "harness": "AirflowServer (real scheduler, LocalExecutor, parallelism 4, max_active_tasks 4)",
            "channel": "SFTP: one OpenSSH server on 127.0.0.1, 285 chrooted accounts",
            "run_state": state,
            "municipalities": len(MUNICIPALITIES),
            "files_delivered": delivered,
            "change_rows": rows,
            "task_states": states,
            "run_seconds": round((ended - started).total_seconds(), 1),
            "task_seconds": {k: round(v, 2) for k, v in per_task.items() if v is not None},
            "per_municipality_seconds": {
                "min": round(per_municipality[0], 2),
                "median": round(statistics.median(per_municipality), 2),
                "p95": round(per_municipality[int(0.95 * (len(per_municipality) - 1))], 2),
                "max": round(per_municipality[-1], 2),
                "sum": round(sum(per_municipality), 1),
            } if per_municipality else None,
            "peak_memory_mb": sampler.report(),
            "target_seconds": 600,
        }
        print(json.dumps(result, indent=2), flush=True)
        return result
    finally:
        if server is not None:
            server.stop()
        sftp.stop()
        dispose_engines()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
