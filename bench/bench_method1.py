"""Method 1 benchmark: a 180,000-row request against a 2,000,000-child store.

Measured in the same run:

* **the DAG through a real scheduler** (LocalExecutor, SFTP on loopback): seconds per task (from
  the REST API), the whole run (queued → end), and the peak RSS of the largest process;
* **the naive script** (`bench/naive_method1.py`: pandas ``read_excel`` with openpyxl, ``merge``,
  ``to_excel`` with openpyxl, msoffcrypto encrypt) on the same request and store.

Reported: processing (decrypt+validate, match, build) vs naive as a ratio (target ≥ 5×) — and,
beside it, the same with ``record_data_subjects`` (the audit's per-person index, which runs beside
the delivery and which the naive script has no counterpart for) — and the whole run vs the sum of
its task times (target ≤ 1.5×). Sizes via ``WELFARE_EXCHANGE_BENCH_CHILDREN``
and ``WELFARE_EXCHANGE_BENCH_ROWS``; the store is generated once and cached under ``var/bench``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import pathlib
import secrets
import subprocess
import sys
import time

import xlsxwriter

from bench.common import MemorySampler
from welfare_exchange.settings import REPO_ROOT, get_settings

SEED = 1
NIS = "11002"  # Antwerpen: the largest city, ~180,000 residents aged 0–25


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _run_child(args: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run a child process; (seconds, peak RSS MB of that child, stdout)."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{args[1]} failed: {err[-2000:]}")
    # ru_maxrss of the children reaped so far is what we want: measured in a fresh process each.
    import resource

    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return seconds, peak, out


def prepare(folder: pathlib.Path, children: int, rows: int) -> tuple[str, pathlib.Path, str]:
    """The cached store and an encrypted request of ``rows`` Antwerp children; returns (db_url, request, password)."""
    from welfare_exchange.db import session_scope
    from welfare_exchange.entitlements.store import sample_children
    from welfare_exchange.intake import encrypt_agile

    from bench.common import cached_store

    folder.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{cached_store(children, SEED)}"
    request = folder / f"request_{rows}.xlsx"
    password_file = folder / "request.password"
    if not request.exists() or not password_file.exists():
        password = secrets.token_urlsafe(12)
        with session_scope(url) as session:
            numbers = sample_children(session, NIS, rows, SEED)
            if len(numbers) < rows:  # top up from elsewhere: a request also names children who moved
                from sqlalchemy import text

                extra = session.execute(text("SELECT insz FROM child WHERE nis_code != :n ORDER BY id LIMIT :k"),
                                        {"n": NIS, "k": rows - len(numbers)}).scalars().all()
                numbers += extra
        buffer = io.BytesIO()
        book = xlsxwriter.Workbook(buffer, {"in_memory": True, "constant_memory": True})
        sheet = book.add_worksheet("Kinderen")
        sheet.write_row(0, 0, ["Rijksregisternummer", "Naam", "Adres"])
        for r, number in enumerate(numbers, start=1):
            sheet.write_string(r, 0, number)
            sheet.write_string(r, 1, f"Kind {r}")
            sheet.write_string(r, 2, f"Straat {r % 500}")
        book.close()
        request.write_bytes(encrypt_agile(buffer.getvalue(), password))
        password_file.write_text(password)
        os.chmod(password_file, 0o600)
    return url, request, password_file.read_text().strip()


def run_scheduler(folder: pathlib.Path, url: str, request: pathlib.Path, password: str) -> dict:
    """One whole Method 1 run through a real scheduler; per-task seconds and totals."""
    from welfare_exchange import audit
    from welfare_exchange.db import session_scope, upgrade
    from welfare_exchange.devtools.airflow_server import AirflowServer
    from welfare_exchange.devtools.sftp_server import SftpServer, chroot_capable_root
    from welfare_exchange.orchestration.dag_factory import method1_dag_id
    from welfare_exchange.protocols import create, registry, transition

    run_dir = folder / f"run-{int(time.time())}"
    run_dir.mkdir(parents=True)
    project_url = f"sqlite:///{run_dir / 'project.db'}"
    # The run's own project DB holds the protocol and ledger; the store is the cached one,
    # copied so the run may write its ledger beside it.
    import shutil

    shutil.copy(url.removeprefix("sqlite:///"), run_dir / "project.db")
    upgrade(project_url)
    snapshot = run_dir / "registry_snapshot.json"
    env_over = {"WELFARE_EXCHANGE_DB_URL": project_url, "WELFARE_EXCHANGE_REGISTRY_SNAPSHOT": str(snapshot),
                "WELFARE_EXCHANGE_STAGING_DIR": str(run_dir / "staging")}
    os.environ.update(env_over)
    user = audit.Actor.current_user()
    with session_scope(project_url) as session:
        protocol = create(
            session, nis_code=NIS, municipality="Antwerpen", kind="method1", channel="sftp", key_connection=f"key_{NIS}",
            college_decision_ref="CB/bench", college_decision_date=dt.date(2026, 9, 1), dpo_advice_date=dt.date(2026, 9, 2),
            actor=user,
        )
        for action in ("submit", "advise", "sign"):
            transition(session, protocol.id, action, actor=user, on=dt.date(2026, 10, 1))
        registry.write_snapshot(session, snapshot)
        entry = next(p for p in registry.snapshot(session) if p["id"] == protocol.id)
    sftp_root = chroot_capable_root(run_dir / "sftp")  # fresh per run: an old outbox holds old results
    server = SftpServer(sftp_root).start()
    try:
        server.add_municipality(NIS)
        name, value = server.env_var(NIS)
        env = {
            **env_over,
            name: value,
            f"AIRFLOW_CONN_KEY_{NIS}": json.dumps({"conn_type": "generic", "password": password}),
            "WELFARE_EXCHANGE_SETTLE_SECONDS": "1",
            "WELFARE_EXCHANGE_POKE_INTERVAL_SECONDS": "2",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        }
        server.drop_request(NIS, request.read_bytes(), "aanvraag_antwerpen.xlsx")
        with AirflowServer(home=run_dir / "airflow", env=env) as airflow:
            dag_id = method1_dag_id(entry)
            airflow.wait_for_dag(dag_id, timeout=180)
            airflow.unpause(dag_id)
            sampler = MemorySampler(lambda: [p.pid for p in airflow._procs.values()])
            sampler.start()
            run_id = airflow.trigger(dag_id, logical_date=dt.datetime(2026, 11, 2, 9, tzinfo=dt.timezone.utc))
            state = airflow.wait_for_run(dag_id, run_id, timeout=1800)
            sampler.stop()
            q = airflow._q
            run = airflow.request("GET", f"/api/v2/dags/{q(dag_id)}/dagRuns/{q(run_id)}").json()
            tis = airflow.request("GET", f"/api/v2/dags/{q(dag_id)}/dagRuns/{q(run_id)}/taskInstances").json()["task_instances"]
        if state != "success":
            raise RuntimeError(f"the benchmark run ended {state}")
    finally:
        server.stop()
    tis = sorted(tis, key=lambda ti: ti["start_date"] or "")  # the order the tasks ran in
    durations = {ti["task_id"]: round(ti["duration"] or 0.0, 2) for ti in tis}
    start = dt.datetime.fromisoformat(run["start_date"])
    end = dt.datetime.fromisoformat(run["end_date"])
    delivered = next(dt.datetime.fromisoformat(ti["end_date"]) for ti in tis if ti["task_id"] == "deliver_result")
    return {"task_seconds": durations, "run_seconds": round((end - start).total_seconds(), 2),
            "seconds_to_delivery": round((delivered - start).total_seconds(), 2),
            "peak_memory_mb": sampler.report()}


def main() -> dict:
    children = _env_int("WELFARE_EXCHANGE_BENCH_CHILDREN", 2_000_000)
    rows = _env_int("WELFARE_EXCHANGE_BENCH_ROWS", 180_000)
    folder = get_settings().home / "bench" / "method1"
    print(f"  store {children:,} children, request {rows:,} rows")
    url, request, password = prepare(folder, children, rows)
    password_file = folder / "request.password"

    naive_s, naive_rss, naive_out = _run_child(
        [sys.executable, str(REPO_ROOT / "bench" / "naive_method1.py"), str(request), str(password_file), url,
         str(folder / "naive_result.xlsx")]
    )
    print(f"  naive script: {naive_s:.1f} s, peak {naive_rss:.0f} MB ({naive_out.strip()} result rows)")

    ours = run_scheduler(folder, url, request, password)
    tasks = ours["task_seconds"]
    processing = sum(tasks.get(t, 0) for t in ("decrypt_and_validate", "match_entitlements", "build_result"))
    with_subjects = processing + tasks.get("record_data_subjects", 0)
    task_sum = sum(tasks.values())
    print("  DAG through the scheduler, seconds per task:")
    for task_id, seconds in tasks.items():
        print(f"    {task_id:<32} {seconds:7.2f}")
    print(f"  processing (decrypt+validate, match, build): {processing:.2f} s vs naive {naive_s:.2f} s "
          f"→ {naive_s / processing:.1f}× faster (target ≥ 5×)")
    print(f"  the same plus record_data_subjects (the audit's per-person index, which the naive script does "
          f"not keep; it runs beside the delivery): {with_subjects:.2f} s → {naive_s / with_subjects:.1f}×")
    print(f"  whole run {ours['run_seconds']:.1f} s vs sum of task times {task_sum:.1f} s "
          f"→ {ours['run_seconds'] / task_sum:.2f}× (target ≤ 1.5×); result delivered {ours['seconds_to_delivery']:.1f} s "
          "after the run started")
    memory = ours["peak_memory_mb"]
    print(f"  peak memory of one process: {memory['largest_process_own']} MB own (RSS {memory['largest_process_rss']} MB, "
          f"which also counts store pages read through SQLite's memory map); naive script RSS {naive_rss:.0f} MB")
    return {
        "children": children, "rows": rows, "naive_seconds": round(naive_s, 2), "naive_peak_rss_mb": round(naive_rss),
        **ours, "processing_seconds": round(processing, 2), "speedup_vs_naive": round(naive_s / processing, 2),
        "processing_with_subject_index_seconds": round(with_subjects, 2),
        "speedup_with_subject_index": round(naive_s / with_subjects, 2),
        "run_over_task_sum": round(ours["run_seconds"] / task_sum, 3),
    }
